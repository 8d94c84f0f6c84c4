/* varanus-mongoc-apm: libmongoc's side of an agreement run.
 *
 *   varanus-mongoc-apm URI VARIANT OUT.jsonl
 *
 * Runs the variant's workload (see run_agreement.py) through URI with APM
 * callbacks registered, and writes every command event libmongoc published
 * as one JSON line (bson_as_relaxed_extended_json) in agree.py's
 * driver-event format. Exits non-zero when the workload does not behave as
 * the variant expects (a failed command must fail with its code, ...), so a
 * broken upstream cannot pass for agreement.
 *
 * A single-threaded client: its monitor hellos run on the application's own
 * connection (varanus labels them heartbeat) between operations, whenever
 * heartbeatFrequencyMS has passed.
 */
#include <mongoc/mongoc.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
   FILE *out;
   atomic_int heartbeats; /* monitor threads count them in the pooled run */
   atomic_int awaited;
} recorder_t;

static void
write_line (recorder_t *rec, const bson_t *doc)
{
   size_t len = 0;
   char *json = bson_as_relaxed_extended_json (doc, &len);
   if (!json) {
      fprintf (stderr, "varanus-mongoc-apm: an event did not convert to JSON\n");
      exit (1);
   }
   fprintf (rec->out, "%s\n", json);
   fflush (rec->out);
   bson_free (json);
}

/* Fields every command event carries. libmongoc's requestIds come from one
 * counter per client, so host:port is enough to pair started with its end. */
static void
append_common (bson_t *doc,
               const char *event,
               int64_t request_id,
               const char *command_name,
               const mongoc_host_list_t *host,
               int32_t server_connection_id)
{
   BSON_APPEND_UTF8 (doc, "event", event);
   BSON_APPEND_INT64 (doc, "requestId", request_id);
   BSON_APPEND_UTF8 (doc, "commandName", command_name);
   BSON_APPEND_UTF8 (doc, "connection", host->host_and_port);
   if (server_connection_id >= 0) {
      BSON_APPEND_INT32 (doc, "serverConnectionId", server_connection_id);
   }
}

static void
on_started (const mongoc_apm_command_started_t *e)
{
   recorder_t *rec = mongoc_apm_command_started_get_context (e);
   bson_t doc = BSON_INITIALIZER;
   append_common (&doc,
                  "commandStarted",
                  mongoc_apm_command_started_get_request_id (e),
                  mongoc_apm_command_started_get_command_name (e),
                  mongoc_apm_command_started_get_host (e),
                  mongoc_apm_command_started_get_server_connection_id (e));
   BSON_APPEND_UTF8 (&doc, "databaseName", mongoc_apm_command_started_get_database_name (e));
   BSON_APPEND_DOCUMENT (&doc, "command", mongoc_apm_command_started_get_command (e));
   write_line (rec, &doc);
   bson_destroy (&doc);
}

static void
on_succeeded (const mongoc_apm_command_succeeded_t *e)
{
   recorder_t *rec = mongoc_apm_command_succeeded_get_context (e);
   bson_t doc = BSON_INITIALIZER;
   append_common (&doc,
                  "commandSucceeded",
                  mongoc_apm_command_succeeded_get_request_id (e),
                  mongoc_apm_command_succeeded_get_command_name (e),
                  mongoc_apm_command_succeeded_get_host (e),
                  mongoc_apm_command_succeeded_get_server_connection_id (e));
   BSON_APPEND_DOCUMENT (&doc, "reply", mongoc_apm_command_succeeded_get_reply (e));
   /* bson_get_monotonic_time: microseconds, each reading truncated. */
   BSON_APPEND_INT64 (&doc, "durationMicros", mongoc_apm_command_succeeded_get_duration (e));
   BSON_APPEND_INT32 (&doc, "durationResolutionMicros", 1);
   write_line (rec, &doc);
   bson_destroy (&doc);
}

static void
on_failed (const mongoc_apm_command_failed_t *e)
{
   recorder_t *rec = mongoc_apm_command_failed_get_context (e);
   bson_t doc = BSON_INITIALIZER;
   bson_t failure;
   bson_error_t error;
   const bson_t *reply = mongoc_apm_command_failed_get_reply (e);

   mongoc_apm_command_failed_get_error (e, &error);
   append_common (&doc,
                  "commandFailed",
                  mongoc_apm_command_failed_get_request_id (e),
                  mongoc_apm_command_failed_get_command_name (e),
                  mongoc_apm_command_failed_get_host (e),
                  mongoc_apm_command_failed_get_server_connection_id (e));
   /* A server error: the server's reply (empty when libmongoc redacts it),
    * with the code from the error when the reply does not show it. A client
    * error (network, timeout): only its message. */
   BSON_APPEND_DOCUMENT_BEGIN (&doc, "failure", &failure);
   if (reply && !bson_empty (reply)) {
      bson_concat (&failure, reply);
   } else if (error.domain == MONGOC_ERROR_SERVER || error.domain == MONGOC_ERROR_QUERY) {
      BSON_APPEND_INT32 (&failure, "code", (int32_t) error.code);
   } else {
      BSON_APPEND_UTF8 (&failure, "message", error.message);
   }
   bson_append_document_end (&doc, &failure);
   BSON_APPEND_INT64 (&doc, "durationMicros", mongoc_apm_command_failed_get_duration (e));
   BSON_APPEND_INT32 (&doc, "durationResolutionMicros", 1);
   write_line (rec, &doc);
   bson_destroy (&doc);
}

static void
on_heartbeat (const mongoc_apm_server_heartbeat_succeeded_t *e)
{
   recorder_t *rec = mongoc_apm_server_heartbeat_succeeded_get_context (e);
   atomic_fetch_add (&rec->heartbeats, 1);
   if (mongoc_apm_server_heartbeat_succeeded_get_awaited (e)) {
      atomic_fetch_add (&rec->awaited, 1);
   }
}

static void
die (const char *what, const bson_error_t *error)
{
   fprintf (stderr, "varanus-mongoc-apm: %s: %s (domain %u, code %u)\n",
            what, error ? error->message : "", error ? error->domain : 0u, error ? error->code : 0u);
   exit (1);
}

static void
check (bool ok, const char *what, const bson_error_t *error)
{
   if (!ok) {
      die (what, error);
   }
}

/* An operation that must fail with the server error `code`. */
static void
expect_code (bool ok, const bson_error_t *error, uint32_t code, const char *what)
{
   if (ok) {
      fprintf (stderr, "varanus-mongoc-apm: %s succeeded, expected error code %u\n", what, code);
      exit (1);
   }
   if (error->code != code) {
      die (what, error);
   }
}

static int64_t
now_ms (void)
{
   return bson_get_monotonic_time () / 1000;
}

static void
insert_ids (mongoc_collection_t *coll, int from, int to)
{
   bson_error_t error;
   bson_t *docs[16];
   int n = 0;
   for (int i = from; i <= to && n < 16; i++, n++) {
      docs[n] = BCON_NEW ("_id", BCON_INT32 (i), "x", BCON_INT32 (i));
   }
   bool ok = mongoc_collection_insert_many (coll, (const bson_t **) docs, (size_t) n, NULL, NULL, &error);
   for (int i = 0; i < n; i++) {
      bson_destroy (docs[i]);
   }
   check (ok, "insert_many", &error);
}

static int
find_all (mongoc_collection_t *coll, const bson_t *opts)
{
   bson_t filter = BSON_INITIALIZER;
   bson_error_t error;
   const bson_t *doc;
   int n = 0;
   mongoc_cursor_t *cursor = mongoc_collection_find_with_opts (coll, &filter, opts, NULL);
   while (mongoc_cursor_next (cursor, &doc)) {
      n++;
   }
   check (!mongoc_cursor_error (cursor, &error), "find", &error);
   mongoc_cursor_destroy (cursor);
   bson_destroy (&filter);
   return n;
}

static void
run_workload (mongoc_client_t *client, const char *variant)
{
   bson_error_t error;
   bool ok;
   mongoc_database_t *db = mongoc_client_get_database (client, "agree");
   mongoc_collection_t *coll = mongoc_client_get_collection (client, "agree", "things");

   if (!strcmp (variant, "plain") || !strcmp (variant, "zlib") || !strcmp (variant, "snappy") ||
       !strcmp (variant, "zstd")) {
      insert_ids (coll, 1, 5);
      bson_t *opts = BCON_NEW ("batchSize", BCON_INT32 (2));
      int n = find_all (coll, opts);
      bson_destroy (opts);
      if (n < 3) {
         fprintf (stderr, "varanus-mongoc-apm: find returned %d documents, the workload needs a getMore\n", n);
         exit (1);
      }
      bson_t *sel = BCON_NEW ("_id", BCON_INT32 (1));
      bson_t *upd = BCON_NEW ("$set", "{", "x", BCON_INT32 (10), "}");
      check (mongoc_collection_update_one (coll, sel, upd, NULL, NULL, &error), "update_one", &error);
      bson_destroy (upd);
      bson_destroy (sel);
      sel = BCON_NEW ("_id", BCON_INT32 (5));
      check (mongoc_collection_delete_one (coll, sel, NULL, NULL, &error), "delete_one", &error);
      bson_destroy (sel);
   } else if (!strcmp (variant, "exhaust")) {
      insert_ids (coll, 1, 7);
      /* 1.23 falls back to a normal cursor here (see main): find + getMores. */
      bson_t *opts = BCON_NEW ("exhaust", BCON_BOOL (true), "batchSize", BCON_INT32 (2));
      int n = find_all (coll, opts);
      bson_destroy (opts);
      if (n < 5) {
         fprintf (stderr, "varanus-mongoc-apm: exhaust find returned %d documents\n", n);
         exit (1);
      }
   } else if (!strcmp (variant, "w0")) {
      mongoc_write_concern_t *wc = mongoc_write_concern_new ();
      mongoc_write_concern_set_w (wc, 0);
      mongoc_collection_t *w0 = mongoc_client_get_collection (client, "agree", "things");
      mongoc_collection_set_write_concern (w0, wc);
      bson_t *doc = BCON_NEW ("_id", BCON_INT32 (1), "x", BCON_INT32 (1));
      check (mongoc_collection_insert_one (w0, doc, NULL, NULL, &error), "w0 insert_one", &error);
      bson_destroy (doc);
      insert_ids (w0, 2, 3);
      bson_t *sel = BCON_NEW ("_id", BCON_INT32 (1));
      bson_t *upd = BCON_NEW ("$set", "{", "x", BCON_INT32 (2), "}");
      check (mongoc_collection_update_one (w0, sel, upd, NULL, NULL, &error), "w0 update_one", &error);
      bson_destroy (upd);
      bson_destroy (sel);
      sel = BCON_NEW ("_id", BCON_INT32 (3));
      check (mongoc_collection_delete_one (w0, sel, NULL, NULL, &error), "w0 delete_one", &error);
      bson_destroy (sel);
      mongoc_collection_destroy (w0);
      mongoc_write_concern_destroy (wc);
      find_all (coll, NULL); /* an acknowledged command after them */
   } else if (!strcmp (variant, "failed")) {
      bson_t *cmd = BCON_NEW ("frobnicate", BCON_INT32 (1));
      ok = mongoc_database_command_simple (db, cmd, NULL, NULL, &error);
      expect_code (ok, &error, 59, "the unknown command frobnicate");
      bson_destroy (cmd);
   } else if (!strcmp (variant, "dupkey")) {
      bson_t *doc = BCON_NEW ("_id", BCON_INT32 (1), "x", BCON_INT32 (1));
      check (mongoc_collection_insert_one (coll, doc, NULL, NULL, &error), "insert_one", &error);
      ok = mongoc_collection_insert_one (coll, doc, NULL, NULL, &error);
      expect_code (ok, &error, 11000, "the duplicate insert");
      bson_destroy (doc);
   } else if (!strcmp (variant, "sasl")) {
      static const char payload[] = "n,,n=agree,r=c2VjcmV0bm9uY2U=";
      mongoc_database_t *admin = mongoc_client_get_database (client, "admin");
      bson_t *cmd = BCON_NEW ("saslStart", BCON_INT32 (1),
                              "mechanism", BCON_UTF8 ("SCRAM-SHA-256"),
                              "payload", BCON_BIN (BSON_SUBTYPE_BINARY, (const uint8_t *) payload,
                                                   (uint32_t) (sizeof payload - 1)),
                              "autoAuthorize", BCON_INT32 (1));
      ok = mongoc_database_command_simple (admin, cmd, NULL, NULL, &error);
      expect_code (ok, &error, 18, "saslStart");
      bson_destroy (cmd);
      mongoc_database_destroy (admin);
   } else {
      fprintf (stderr, "varanus-mongoc-apm: unknown variant %s\n", variant);
      exit (2);
   }
   mongoc_collection_destroy (coll);
   mongoc_database_destroy (db);
}

int
main (int argc, char **argv)
{
   if (argc != 4) {
      fprintf (stderr, "usage: varanus-mongoc-apm URI VARIANT OUT.jsonl\n");
      return 2;
   }
   const char *variant = argv[2];
   recorder_t rec;
   rec.out = fopen (argv[3], "w");
   atomic_init (&rec.heartbeats, 0);
   atomic_init (&rec.awaited, 0);
   if (!rec.out) {
      perror (argv[3]);
      return 1;
   }

   mongoc_init ();
   bson_error_t error;
   mongoc_uri_t *uri = mongoc_uri_new_with_error (argv[1], &error);
   check (uri != NULL, "URI", &error);
   mongoc_uri_set_option_as_int32 (uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500);
   mongoc_uri_set_option_as_int32 (uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
   mongoc_uri_set_option_as_bool (uri, MONGOC_URI_DIRECTCONNECTION, true);
   mongoc_uri_set_option_as_bool (uri, MONGOC_URI_RETRYWRITES, false);
   mongoc_uri_set_option_as_bool (uri, MONGOC_URI_RETRYREADS, false);
   char appname[64];
   snprintf (appname, sizeof appname, "agree-mongoc-%s", variant);
   mongoc_uri_set_appname (uri, appname);
   if (!strcmp (variant, "zlib") || !strcmp (variant, "snappy") || !strcmp (variant, "zstd")) {
      mongoc_uri_set_compressors (uri, variant);
   }

   mongoc_apm_callbacks_t *cbs = mongoc_apm_callbacks_new ();
   mongoc_apm_set_command_started_cb (cbs, on_started);
   mongoc_apm_set_command_succeeded_cb (cbs, on_succeeded);
   mongoc_apm_set_command_failed_cb (cbs, on_failed);
   mongoc_apm_set_server_heartbeat_succeeded_cb (cbs, on_heartbeat);

   /* libmongoc 1.23 has no exhaust cursors over OP_MSG (it warns and uses a
    * normal cursor), and it needs OP_MSG (wire version 6+). Its exhaust
    * stream is the pooled client's streaming monitor: awaited hellos on a
    * monitoring connection of their own. The other variants use a
    * single-threaded client, whose monitor hellos share the application's
    * connection. */
   const bool pooled = !strcmp (variant, "exhaust");
   mongoc_client_pool_t *pool = NULL;
   mongoc_client_t *client;
   if (pooled) {
      pool = mongoc_client_pool_new_with_error (uri, &error);
      check (pool != NULL, "client pool", &error);
      mongoc_client_pool_set_error_api (pool, MONGOC_ERROR_API_VERSION_2);
      mongoc_client_pool_set_apm_callbacks (pool, cbs, &rec);
      client = mongoc_client_pool_pop (pool);
   } else {
      client = mongoc_client_new_from_uri_with_error (uri, &error);
      check (client != NULL, "client", &error);
      mongoc_client_set_error_api (client, MONGOC_ERROR_API_VERSION_2);
      mongoc_client_set_apm_callbacks (client, cbs, &rec);
   }

   run_workload (client, variant);

   /* Heartbeats: the first check is the connection's handshake; wait (the
    * event, with a deadline) for later ones. A single-threaded client checks
    * during server selection once heartbeatFrequencyMS has passed; the pool's
    * monitor streams awaited hellos by itself. */
   const int64_t deadline = now_ms () + 15000;
   while (atomic_load (&rec.heartbeats) < 3 || (pooled && atomic_load (&rec.awaited) < 3)) {
      if (!pooled) {
         mongoc_server_description_t *sd = mongoc_client_select_server (client, false, NULL, &error);
         check (sd != NULL, "server selection", &error);
         mongoc_server_description_destroy (sd);
      }
      if (now_ms () > deadline) {
         fprintf (stderr, "varanus-mongoc-apm: %d heartbeats (%d awaited) within 15 s\n",
                  atomic_load (&rec.heartbeats), atomic_load (&rec.awaited));
         return 1;
      }
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep (&ts, NULL);
   }

   if (pooled) {
      mongoc_client_pool_push (pool, client);
      mongoc_client_pool_destroy (pool);
   } else {
      mongoc_client_destroy (client);
   }
   mongoc_apm_callbacks_destroy (cbs);
   mongoc_uri_destroy (uri);
   mongoc_cleanup ();
   if (fclose (rec.out) != 0) {
      perror (argv[3]);
      return 1;
   }
   return 0;
}
