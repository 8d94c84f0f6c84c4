'use strict';
// The Node.js driver's side of an agreement run (run_agreement.py starts it):
//   node node_workload.js URI VARIANT OUT.jsonl
// Runs the variant's workload with `monitorCommands: true` and writes every
// command event the driver published as one JSON line (canonical Extended JSON)
// in agree.py's driver-event format. NODE_PATH points at
// tests/integration/node/node_modules (installed by scripts/setup-node.sh).
const fs = require('fs');
const { MongoClient } = require('mongodb');
const { EJSON } = require('bson');

const [uri, variant, outPath] = process.argv.slice(2);
if (!uri || !variant || !outPath) {
  console.error('usage: node node_workload.js URI VARIANT OUT.jsonl');
  process.exit(2);
}
const COMPRESSORS = ['zlib', 'snappy', 'zstd'];
const DEADLINE_MS = 15000;

// Canonical, not relaxed, Extended JSON: relaxed prints an int64 (cursor ids)
// through a JavaScript double and loses digits. agree.py reads both forms.
const ejson = doc => (doc === undefined ? null : JSON.parse(EJSON.stringify(doc, { relaxed: false })));
const conn = e => `${e.address}/${e.connectionId}`;
const serverConnectionId = e => (e.serverConnectionId == null ? null : Number(e.serverConnectionId));

function failureOf(err) {
  if (err == null) return null;
  // A redacted failure is published as {} (the driver's maybeRedact).
  if (!(err instanceof Error)) return ejson(err);
  const f = {};
  if (err.code !== undefined) f.code = err.code;
  if (err.codeName !== undefined) f.codeName = err.codeName;
  if (err.errmsg !== undefined || err.code !== undefined) f.errmsg = err.errmsg ?? err.message;
  else f.message = err.message;
  const labels = typeof err.errorLabels !== 'undefined' ? [...err.errorLabels] : [];
  if (labels.length) f.errorLabels = labels;
  return f;
}

async function waitFor(pred, what) {
  const end = Date.now() + DEADLINE_MS;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 20));
  }
}

async function expectError(promise, code, what) {
  try {
    await promise;
  } catch (err) {
    if (err.code !== code) throw new Error(`${what} failed with code ${err.code}, expected ${code}: ${err.message}`);
    return;
  }
  throw new Error(`${what} succeeded, expected error code ${code}`);
}

async function main() {
  const events = [];
  const heartbeats = [];
  const options = {
    monitorCommands: true,
    directConnection: true,
    heartbeatFrequencyMS: 500,
    appName: `agree-node-${variant}`,
    retryWrites: false,
    retryReads: false,
    serverSelectionTimeoutMS: 5000,
  };
  if (COMPRESSORS.includes(variant)) options.compressors = [variant];
  const client = new MongoClient(uri, options);
  client.on('commandStarted', e =>
    events.push({
      event: 'commandStarted', requestId: e.requestId, commandName: e.commandName,
      databaseName: e.databaseName, command: ejson(e.command), connection: conn(e),
      serverConnectionId: serverConnectionId(e),
    }));
  // Node's durations are whole milliseconds (Math.floor of process.hrtime at
  // both ends), so up to 1 ms of real time may be missing from them.
  client.on('commandSucceeded', e =>
    events.push({
      event: 'commandSucceeded', requestId: e.requestId, commandName: e.commandName,
      databaseName: e.databaseName, reply: ejson(e.reply), durationMicros: e.duration * 1000,
      durationResolutionMicros: 1000, connection: conn(e), serverConnectionId: serverConnectionId(e),
    }));
  client.on('commandFailed', e =>
    events.push({
      event: 'commandFailed', requestId: e.requestId, commandName: e.commandName,
      databaseName: e.databaseName, failure: failureOf(e.failure), durationMicros: e.duration * 1000,
      durationResolutionMicros: 1000, connection: conn(e), serverConnectionId: serverConnectionId(e),
    }));
  client.on('serverHeartbeatSucceeded', e => heartbeats.push(e));

  try {
    await client.connect();
    const db = client.db('agree');
    const coll = db.collection('things');
    if (variant === 'plain' || COMPRESSORS.includes(variant)) {
      await coll.insertMany([1, 2, 3, 4, 5].map(i => ({ _id: i, x: i, s: 'é'.repeat(i) })));
      const docs = await coll.find({}, { batchSize: 2 }).toArray();
      if (docs.length < 3) throw new Error(`find returned ${docs.length} documents, the workload needs a getMore`);
      await coll.updateOne({ _id: 1 }, { $set: { x: 10 } });
      await coll.deleteOne({ _id: 5 });
    } else if (variant === 'exhaust') {
      // Node 6 has no exhaust cursors: its exhaust stream is the streaming
      // monitor (awaited hellos). A few commands, then wait for the stream.
      await coll.insertMany([1, 2, 3].map(i => ({ _id: i })));
      await coll.find({}, { batchSize: 2 }).toArray();
      await waitFor(() => heartbeats.filter(h => h.awaited).length >= 3, 'three awaited heartbeats');
    } else if (variant === 'w0') {
      const w0 = db.collection('things', { writeConcern: { w: 0 } });
      await w0.insertOne({ _id: 1, x: 1 });
      await w0.insertMany([{ _id: 2 }, { _id: 3 }]);
      await w0.updateOne({ _id: 1 }, { $set: { x: 2 } });
      await w0.deleteOne({ _id: 3 });
      await coll.findOne({ _id: 1 });
    } else if (variant === 'failed') {
      await expectError(db.command({ frobnicate: 1 }), 59, 'the unknown command frobnicate');
    } else if (variant === 'dupkey') {
      await coll.insertOne({ _id: 1, x: 1 });
      await expectError(coll.insertOne({ _id: 1, x: 2 }), 11000, 'the duplicate insert');
    } else if (variant === 'sasl') {
      await expectError(
        client.db('admin').command({
          saslStart: 1, mechanism: 'SCRAM-SHA-256',
          payload: Buffer.from('n,,n=agree,r=c2VjcmV0bm9uY2U='), autoAuthorize: 1,
        }), 18, 'saslStart');
    } else {
      throw new Error(`unknown variant ${variant}`);
    }
    // The first check of a monitor is its handshake: wait for later ones.
    await waitFor(() => heartbeats.length >= 3, 'three server heartbeats');
  } finally {
    await client.close();
  }
  fs.writeFileSync(outPath, events.map(e => JSON.stringify(e) + '\n').join(''));
}

main().catch(err => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
