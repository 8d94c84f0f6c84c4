/* varanus-mongoc-client: libmongoc (Debian's 1.23) running the integration
 * workload against a MongoDB-compatible server.
 *
 *   varanus-mongoc-client URI [none|zlib|snappy|zstd]
 *
 * libmongoc shakes hands with OP_QUERY isMaster on admin.$cmd and then uses
 * OP_MSG. APM callbacks count the driver's command events and check that
 * every started event ends with exactly one succeeded or failed event with
 * its request id. When the server is varanus-stub (serverStatus has
 * varanusStub), its counters prove the OP_QUERY handshake, the compressor and
 * the unacknowledged (moreToCome) writes really went over the wire.
 * Exits 1 at the first mismatch, naming the line.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "mongoc_client.c:%d: check failed: %s\n", __LINE__, #cond); \
      exit(1);                                                                    \
    }                                                                             \
  } while (0)

#define CHECK_OK(ok, error)                                                         \
  do {                                                                              \
    if (!(ok)) {                                                                    \
      fprintf(stderr, "mongoc_client.c:%d: unexpected error %u.%u: %s\n", __LINE__, \
              (error).domain, (error).code, (error).message);                       \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

enum { MAX_EVENTS = 4096 };

typedef struct {
  int64_t started_ids[MAX_EVENTS];
  char started_names[MAX_EVENTS][32];
  int started;
  int64_t ended_ids[MAX_EVENTS];
  int succeeded;
  int failed;
} apm_t;

static void on_started(const mongoc_apm_command_started_t* e) {
  apm_t* apm = mongoc_apm_command_started_get_context(e);
  CHECK(apm->started < MAX_EVENTS);
  apm->started_ids[apm->started] = mongoc_apm_command_started_get_request_id(e);
  snprintf(apm->started_names[apm->started], sizeof apm->started_names[0], "%s",
           mongoc_apm_command_started_get_command_name(e));
  apm->started++;
}

static void on_succeeded(const mongoc_apm_command_succeeded_t* e) {
  apm_t* apm = mongoc_apm_command_succeeded_get_context(e);
  CHECK(apm->succeeded + apm->failed < MAX_EVENTS);
  apm->ended_ids[apm->succeeded + apm->failed] = mongoc_apm_command_succeeded_get_request_id(e);
  apm->succeeded++;
}

static void on_failed(const mongoc_apm_command_failed_t* e) {
  apm_t* apm = mongoc_apm_command_failed_get_context(e);
  CHECK(apm->succeeded + apm->failed < MAX_EVENTS);
  apm->ended_ids[apm->succeeded + apm->failed] = mongoc_apm_command_failed_get_request_id(e);
  apm->failed++;
}

/* Number of started events named `name` since index `from`. */
static int count_started(const apm_t* apm, int from, const char* name) {
  int n = 0;
  for (int i = from; i < apm->started; i++) n += strcmp(apm->started_names[i], name) == 0;
  return n;
}

static void check_pairing(const apm_t* apm) {
  CHECK(apm->started == apm->succeeded + apm->failed);
  for (int i = 0; i < apm->started; i++) {
    int matches = 0;
    for (int j = 0; j < apm->started; j++) matches += apm->ended_ids[j] == apm->started_ids[i];
    if (matches != 1) {
      fprintf(stderr, "request %lld (%s) has %d terminal events\n", (long long)apm->started_ids[i],
              apm->started_names[i], matches);
      exit(1);
    }
  }
}

static int64_t doc_int64(const bson_t* doc, const char* path) {
  bson_iter_t it, found;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &found)) return -1;
  return bson_iter_as_int64(&found);
}

/* serverStatus.varanusStub.<path>, or -1 when the server is not the stub. */
static int64_t stub_counter(mongoc_client_t* client, const char* path) {
  bson_t cmd = BSON_INITIALIZER, reply;
  bson_error_t error;
  BSON_APPEND_INT32(&cmd, "serverStatus", 1);
  bool ok = mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &error);
  CHECK_OK(ok, error);
  char full[128];
  snprintf(full, sizeof full, "varanusStub.%s", path);
  int64_t v = doc_int64(&reply, full);
  bson_destroy(&reply);
  bson_destroy(&cmd);
  return v;
}

static int64_t count_docs(mongoc_collection_t* coll, const bson_t* filter) {
  bson_error_t error;
  int64_t n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL, &error);
  CHECK_OK(n >= 0, error);
  return n;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s URI [none|zlib|snappy|zstd]\n", argv[0]);
    return 2;
  }
  const char* compressor = argc > 2 ? argv[2] : "none";
  char uri_text[1024];
  const char* sep = strchr(argv[1], '?') ? "&" : (argv[1][strlen(argv[1]) - 1] == '/' ? "?" : "/?");
  snprintf(uri_text, sizeof uri_text, "%s%sdirectConnection=true&serverSelectionTimeoutMS=5000%s%s",
           argv[1], sep, strcmp(compressor, "none") ? "&compressors=" : "",
           strcmp(compressor, "none") ? compressor : "");

  mongoc_init();
  bson_error_t error;
  mongoc_uri_t* uri = mongoc_uri_new_with_error(uri_text, &error);
  CHECK_OK(uri, error);
  mongoc_client_t* client = mongoc_client_new_from_uri(uri);
  CHECK(client);
  static apm_t apm;
  mongoc_apm_callbacks_t* cbs = mongoc_apm_callbacks_new();
  mongoc_apm_set_command_started_cb(cbs, on_started);
  mongoc_apm_set_command_succeeded_cb(cbs, on_succeeded);
  mongoc_apm_set_command_failed_cb(cbs, on_failed);
  CHECK(mongoc_client_set_apm_callbacks(client, cbs, &apm));

  bson_t reply;
  bool ok;

  /* Handshake (OP_QUERY isMaster) happens on the first command. */
  fprintf(stderr, "mongoc workload (%s): handshake\n", compressor);
  ok = mongoc_client_command_simple(client, "admin", BCON_NEW("ping", BCON_INT32(1)), NULL, &reply,
                                    &error);
  CHECK_OK(ok, error);
  bson_destroy(&reply);
  ok = mongoc_client_command_simple(client, "admin", BCON_NEW("buildInfo", BCON_INT32(1)), NULL,
                                    &reply, &error);
  CHECK_OK(ok, error);
  bson_iter_t it;
  CHECK(bson_iter_init_find(&it, &reply, "version") &&
        strcmp(bson_iter_utf8(&it, NULL), "6.0.0") == 0);
  bson_destroy(&reply);
  ok = mongoc_client_command_simple(client, "admin", BCON_NEW("isMaster", BCON_INT32(1)), NULL,
                                    &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "maxWireVersion") == 17);
  CHECK(doc_int64(&reply, "maxWriteBatchSize") == 100000);
  bson_destroy(&reply);

  mongoc_collection_t* coll = mongoc_client_get_collection(client, "varanus_it_mongoc", "c");
  if (!mongoc_collection_drop(coll, &error)) CHECK(error.code == 26); /* ns not found */

  fprintf(stderr, "mongoc workload (%s): insert\n", compressor);
  int mark = apm.started;
  ok = mongoc_collection_insert_one(coll, BCON_NEW("_id", BCON_INT32(0), "k", "first"), NULL,
                                    &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "insertedCount") == 1);
  bson_destroy(&reply);
  bson_t* docs[22];
  for (int i = 0; i < 22; i++)
    docs[i] = BCON_NEW("_id", BCON_INT32(i + 1), "k", BCON_INT32((i + 1) % 3));
  ok = mongoc_collection_insert_many(coll, (const bson_t**)docs, 22, NULL, &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "insertedCount") == 22);
  bson_destroy(&reply);
  for (int i = 0; i < 22; i++) bson_destroy(docs[i]);
  CHECK(count_started(&apm, mark, "insert") == 2);

  fprintf(stderr, "mongoc workload (%s): find + getMore\n", compressor);
  mark = apm.started;
  bson_t* opts = BCON_NEW("batchSize", BCON_INT32(5), "sort", "{", "_id", BCON_INT32(1), "}");
  mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(coll, BCON_NEW(NULL), opts, NULL);
  const bson_t* doc;
  int n = 0;
  while (mongoc_cursor_next(cursor, &doc)) {
    CHECK(doc_int64(doc, "_id") == n);
    n++;
  }
  CHECK_OK(!mongoc_cursor_error(cursor, &error), error);
  mongoc_cursor_destroy(cursor);
  bson_destroy(opts);
  CHECK(n == 23);
  CHECK(count_started(&apm, mark, "find") == 1);
  CHECK(count_started(&apm, mark, "getMore") == 4);

  /* libmongoc 1.23 cannot do exhaust over OP_MSG: it warns and falls back to
   * a normal cursor (find + getMores). Check that it did, and that nothing
   * was streamed. */
  fprintf(stderr, "mongoc workload (%s): exhaust cursor (falls back)\n", compressor);
  mark = apm.started;
  int64_t exhaust_before =
      stub_counter(client, "exhaustOpReplyOut") + stub_counter(client, "exhaustGetMoreOut");
  opts = BCON_NEW("batchSize", BCON_INT32(4), "exhaust", BCON_BOOL(true));
  cursor = mongoc_collection_find_with_opts(coll, BCON_NEW(NULL), opts, NULL);
  n = 0;
  while (mongoc_cursor_next(cursor, &doc)) n++;
  CHECK_OK(!mongoc_cursor_error(cursor, &error), error);
  mongoc_cursor_destroy(cursor);
  bson_destroy(opts);
  CHECK(n == 23);
  CHECK(count_started(&apm, mark, "getMore") == 5); /* 23 in batches of 4 */
  if (exhaust_before >= 0) {
    int64_t streamed = stub_counter(client, "exhaustOpReplyOut") +
                       stub_counter(client, "exhaustGetMoreOut") - exhaust_before;
    CHECK(streamed == 0);
  }

  fprintf(stderr, "mongoc workload (%s): update + delete\n", compressor);
  ok = mongoc_collection_update_one(coll, BCON_NEW("_id", BCON_INT32(3)),
                                    BCON_NEW("$set", "{", "x", BCON_INT32(1), "}"), NULL, &reply,
                                    &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "modifiedCount") == 1);
  bson_destroy(&reply);
  ok = mongoc_collection_update_many(coll, BCON_NEW("k", BCON_INT32(2)),
                                     BCON_NEW("$set", "{", "k", "two", "}"), NULL, &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "matchedCount") == 7);
  bson_destroy(&reply);
  ok = mongoc_collection_replace_one(coll, BCON_NEW("_id", BCON_INT32(4)),
                                     BCON_NEW("replaced", BCON_BOOL(true)), NULL, &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "modifiedCount") == 1);
  bson_destroy(&reply);
  ok = mongoc_collection_update_one(coll, BCON_NEW("_id", BCON_INT32(100)),
                                    BCON_NEW("$set", "{", "u", BCON_INT32(1), "}"),
                                    BCON_NEW("upsert", BCON_BOOL(true)), &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "upsertedId") == 100);
  bson_destroy(&reply);
  ok = mongoc_collection_delete_many(coll, BCON_NEW("k", "two"), NULL, &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "deletedCount") == 7);
  bson_destroy(&reply);
  ok = mongoc_collection_delete_one(coll, BCON_NEW("_id", BCON_INT32(100)), NULL, &reply, &error);
  CHECK_OK(ok, error);
  CHECK(doc_int64(&reply, "deletedCount") == 1);
  bson_destroy(&reply);

  fprintf(stderr, "mongoc workload (%s): count\n", compressor);
  mark = apm.started;
  CHECK(count_docs(coll, BCON_NEW(NULL)) == 16);
  CHECK(count_docs(coll, BCON_NEW("k", BCON_INT32(1))) == 7);
  CHECK(count_started(&apm, mark, "aggregate") == 2);

  fprintf(stderr, "mongoc workload (%s): errors\n", compressor);
  ok = mongoc_collection_insert_one(coll, BCON_NEW("_id", BCON_INT32(0)), NULL, &reply, &error);
  CHECK(!ok && error.code == 11000);
  CHECK(strstr(error.message, "E11000 duplicate key error collection: varanus_it_mongoc.c") !=
        NULL);
  bson_destroy(&reply);
  mark = apm.failed;
  ok = mongoc_client_command_simple(client, "varanus_it_mongoc",
                                    BCON_NEW("noSuchThing", BCON_INT32(1)), NULL, &reply, &error);
  CHECK(!ok && error.code == 59 && error.domain == MONGOC_ERROR_QUERY);
  CHECK(strcmp(error.message, "no such command: 'noSuchThing'") == 0);
  CHECK(apm.failed == mark + 1);
  bson_destroy(&reply);

  fprintf(stderr, "mongoc workload (%s): w:0\n", compressor);
  int64_t unack_before = stub_counter(client, "moreToComeIn");
  mongoc_write_concern_t* w0 = mongoc_write_concern_new();
  mongoc_write_concern_set_w(w0, 0);
  bson_t w0opts = BSON_INITIALIZER;
  CHECK(mongoc_write_concern_append(w0, &w0opts));
  ok = mongoc_collection_insert_one(coll, BCON_NEW("_id", "w0"), &w0opts, NULL, &error);
  CHECK_OK(ok, error);
  ok = mongoc_collection_update_one(coll, BCON_NEW("_id", "w0"),
                                    BCON_NEW("$set", "{", "seen", BCON_BOOL(true), "}"), &w0opts,
                                    NULL, &error);
  CHECK_OK(ok, error);
  CHECK(count_docs(coll, BCON_NEW("_id", "w0", "seen", BCON_BOOL(true))) == 1);
  if (unack_before >= 0) CHECK(stub_counter(client, "moreToComeIn") - unack_before == 2);
  bson_destroy(&w0opts);
  mongoc_write_concern_destroy(w0);

  fprintf(stderr, "mongoc workload (%s): wire paths\n", compressor);
  int64_t op_query = stub_counter(client, "opQueryIn");
  if (op_query >= 0) {
    CHECK(op_query >= 1); /* the OP_QUERY isMaster handshake */
    if (strcmp(compressor, "none") != 0) {
      char path[64];
      snprintf(path, sizeof path, "compressedIn.%s", compressor);
      CHECK(stub_counter(client, path) > 0);
      snprintf(path, sizeof path, "compressedOut.%s", compressor);
      CHECK(stub_counter(client, path) > 0);
    }
  }

  check_pairing(&apm);
  fprintf(stderr, "mongoc workload (%s): ok (%d commands, %d failed)\n", compressor, apm.started,
          apm.failed);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(client);
  mongoc_apm_callbacks_destroy(cbs);
  mongoc_uri_destroy(uri);
  mongoc_cleanup();
  return 0;
}
