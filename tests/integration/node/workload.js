#!/usr/bin/env node
// The Node.js `mongodb` driver (pinned in package-lock.json) against a
// MongoDB-compatible server: varanus-stub directly, or varanus in front of it.
//
//   node workload.js URI [none|zlib|snappy|zstd]
//
// Runs the integration workload with command monitoring on, asserting the
// driver's own events (every commandStarted has exactly one succeeded or
// failed event with its requestId), the replies' shapes, and that the
// streaming SDAM monitor delivered awaited heartbeats. When the server is the
// stub, its serverStatus.varanusStub counters prove the compressor was used.
// Exits non-zero on the first failed assertion.
'use strict';

const assert = require('node:assert/strict');
let driver;
try {
  driver = require('mongodb');
} catch (e) {
  console.error(`workload.js: ${e.message}\nInstall the pinned driver first: bash scripts/setup-node.sh`);
  process.exit(2);
}
const { MongoClient, MongoServerError, MongoBulkWriteError } = driver;

const TIMEOUT_MS = 10000;

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

class Events {
  constructor(client) {
    this.started = [];
    this.succeeded = [];
    this.failed = [];
    this.awaitedHeartbeats = 0;
    this.waiters = [];
    this.all = { started: [], terminal: [] }; // never reset: for checkPairing()
    client.on('commandStarted', (e) => {
      this.started.push(e);
      this.all.started.push(e);
    });
    client.on('commandSucceeded', (e) => {
      this.succeeded.push(e);
      this.all.terminal.push(e);
    });
    client.on('commandFailed', (e) => {
      this.failed.push(e);
      this.all.terminal.push(e);
    });
    client.on('serverHeartbeatSucceeded', (e) => {
      if (e.awaited) this.awaitedHeartbeats += 1;
      this.waiters = this.waiters.filter((w) => !w());
    });
  }
  reset() {
    this.started = [];
    this.succeeded = [];
    this.failed = [];
  }
  names() {
    return this.started.map((e) => e.commandName);
  }
  /** Resolves once `n` awaited (streaming) heartbeats have succeeded. */
  awaited(n) {
    return new Promise((resolve) => {
      const check = () => {
        if (this.awaitedHeartbeats >= n) {
          resolve();
          return true;
        }
        return false;
      };
      if (!check()) this.waiters.push(check);
    });
  }
  /** Every started event has exactly one terminal event with its requestId. */
  checkPairing() {
    const terminal = new Map();
    for (const e of this.all.terminal) {
      assert.equal(terminal.has(e.requestId), false, `two terminal events for ${e.requestId}`);
      terminal.set(e.requestId, e);
    }
    for (const s of this.all.started) {
      const t = terminal.get(s.requestId);
      assert.ok(t, `no succeeded/failed event for ${s.commandName} ${s.requestId}`);
      assert.equal(t.commandName, s.commandName);
    }
    assert.equal(terminal.size, this.all.started.length);
  }
}

async function stubCounters(client) {
  const status = await client.db('admin').command({ serverStatus: 1 });
  return status.varanusStub;
}

async function main() {
  const [uri, compressor = 'none'] = process.argv.slice(2);
  assert.ok(uri, 'usage: node workload.js URI [none|zlib|snappy|zstd]');
  const options = {
    directConnection: true,
    monitorCommands: true,
    serverSelectionTimeoutMS: 5000,
    heartbeatFrequencyMS: 500, // the streaming monitor's maxAwaitTimeMS
    maxPoolSize: 1, // one connection: w:0 writes and the reads after them stay in order
  };
  if (compressor !== 'none') options.compressors = [compressor];
  const client = new MongoClient(uri, options);
  const events = new Events(client);
  await client.connect();
  const step = (name) => process.stderr.write(`node workload (${compressor}): ${name}\n`);
  try {
    const db = client.db('varanus_it_node');
    const c = db.collection('c');

    step('handshake');
    const hello = await db.admin().command({ hello: 1 });
    assert.equal(hello.isWritablePrimary, true);
    assert.equal(hello.maxWireVersion, 17);
    assert.equal(hello.maxBsonObjectSize, 16777216);
    assert.equal(hello.ok, 1);
    const info = await db.admin().command({ buildInfo: 1 });
    assert.equal(info.version, '6.0.0');
    assert.deepEqual(await db.admin().command({ ping: 1 }), { ok: 1 });

    step('insert');
    await c.drop().catch((e) => {
      if (!(e instanceof MongoServerError && e.code === 26)) throw e;
    });
    events.reset();
    const one = await c.insertOne({ _id: 0, k: 'first' });
    assert.equal(one.insertedId, 0);
    const many = await c.insertMany(Array.from({ length: 22 }, (_, i) => ({ _id: i + 1, k: (i + 1) % 3 })));
    assert.equal(many.insertedCount, 22);
    assert.deepEqual(events.names(), ['insert', 'insert']);
    assert.equal(events.started[1].command.documents.length, 22);
    assert.equal(events.succeeded[1].reply.n, 22);

    step('find + getMore');
    events.reset();
    const docs = await c.find({}, { batchSize: 5, sort: { _id: 1 } }).toArray();
    assert.deepEqual(docs.map((d) => d._id), Array.from({ length: 23 }, (_, i) => i));
    assert.deepEqual(events.names(), ['find', 'getMore', 'getMore', 'getMore', 'getMore']);
    assert.equal(events.succeeded[0].reply.cursor.firstBatch.length, 5);
    assert.equal(events.succeeded[4].reply.cursor.nextBatch.length, 3);
    assert.equal(events.succeeded[4].reply.cursor.id.toString(), '0');
    assert.equal((await c.findOne({ _id: 7 })).k, 1);
    assert.equal(await c.findOne({ _id: 99 }), null);
    const top = await c.find().sort({ _id: -1 }).limit(3).toArray();
    assert.deepEqual(top.map((d) => d._id), [22, 21, 20]);

    step('update + delete');
    let r = await c.updateOne({ _id: 3 }, { $set: { x: 1 }, $inc: { k: 10 } });
    assert.equal(r.matchedCount, 1);
    assert.equal(r.modifiedCount, 1);
    assert.deepEqual(await c.findOne({ _id: 3 }), { _id: 3, k: 10, x: 1 });
    r = await c.updateMany({ k: 2 }, { $set: { k: 'two' } });
    assert.equal(r.modifiedCount, 7);
    r = await c.replaceOne({ _id: 4 }, { replaced: true });
    assert.equal(r.modifiedCount, 1);
    r = await c.updateOne({ _id: 100 }, { $set: { u: 1 } }, { upsert: true });
    assert.equal(r.upsertedId, 100);
    r = await c.deleteOne({ k: 'two' });
    assert.equal(r.deletedCount, 1);
    r = await c.deleteMany({ k: 'two' });
    assert.equal(r.deletedCount, 6);

    step('count');
    events.reset();
    assert.equal(await c.countDocuments({}), 17);
    assert.equal(await c.countDocuments({ k: 0 }), 6);
    assert.equal(await c.countDocuments({}, { skip: 2, limit: 3 }), 3);
    assert.equal(await c.countDocuments({ nothing: 1 }), 0);
    assert.deepEqual(events.names(), ['aggregate', 'aggregate', 'aggregate', 'aggregate']);
    const pipeline = events.started[0].command.pipeline;
    assert.deepEqual(pipeline[pipeline.length - 1], { $group: { _id: 1, n: { $sum: 1 } } });

    step('duplicate key');
    events.reset();
    await assert.rejects(c.insertOne({ _id: 0 }), (e) => {
      assert.equal(e.code, 11000);
      assert.deepEqual(e.keyValue, { _id: 0 });
      assert.match(e.message, /E11000 duplicate key error collection: varanus_it_node\.c index: _id_ dup key: \{ _id: 0 \}/);
      return true;
    });
    // A write error is a succeeded command (ok: 1 with writeErrors).
    assert.equal(events.succeeded.length, 1);
    assert.equal(events.succeeded[0].reply.writeErrors[0].code, 11000);
    await assert.rejects(c.insertMany([{ _id: 200 }, { _id: 0 }, { _id: 201 }], { ordered: false }), (e) => {
      assert.ok(e instanceof MongoBulkWriteError);
      assert.equal(e.result.insertedCount, 2);
      return true;
    });

    step('unknown command');
    events.reset();
    await assert.rejects(db.command({ noSuchThing: 1 }), (e) => {
      assert.ok(e instanceof MongoServerError);
      assert.equal(e.code, 59);
      assert.equal(e.codeName, 'CommandNotFound');
      assert.equal(e.message, "no such command: 'noSuchThing'");
      return true;
    });
    assert.equal(events.failed.length, 1);
    assert.equal(events.failed[0].commandName, 'noSuchThing');
    await assert.rejects(c.updateOne({ _id: 0 }, { $foo: { a: 1 } }), (e) => e.code === 9);

    step('w:0');
    const before = await stubCounters(client); // undefined unless the server is the stub
    events.reset();
    const w0 = db.collection('c', { writeConcern: { w: 0 } });
    const ack = await w0.insertOne({ _id: 'w0' });
    assert.equal(ack.acknowledged, false);
    await w0.updateOne({ _id: 'w0' }, { $set: { seen: true } });
    await w0.deleteOne({ _id: 1 });
    assert.deepEqual(await c.findOne({ _id: 'w0' }), { _id: 'w0', seen: true });
    assert.equal(await c.findOne({ _id: 1 }), null);
    // Node 6.9 sends w:0 writes as ordinary requests (no moreToCome) and
    // reports them acknowledged: false; the writeConcern travels in the command.
    assert.deepEqual(events.started[0].command.writeConcern, { w: 0 });
    assert.deepEqual(events.names().slice(0, 3), ['insert', 'update', 'delete']);

    step('catalog');
    const names = (await db.listCollections().toArray()).map((x) => x.name);
    assert.ok(names.includes('c'));
    const dbs = await db.admin().listDatabases();
    assert.ok(dbs.databases.some((d) => d.name === 'varanus_it_node'));
    await c.createIndex({ k: 1 });
    assert.deepEqual((await c.indexes()).map((i) => i.name).sort(), ['_id_', 'k_1']);

    step('streaming monitor');
    // Node flags the monitor's first (handshake) heartbeat awaited too; three
    // means at least two replies streamed with moreToCome after maxAwaitTimeMS.
    await withTimeout(events.awaited(3), 'three awaited heartbeats');

    if (before !== undefined) {
      const counters = await stubCounters(client);
      if (compressor === 'none') {
        assert.equal(Object.values(counters.compressedIn).reduce((a, b) => a + b, 0), 0);
      } else {
        assert.ok(counters.compressedIn[compressor] > 0, `no ${compressor} requests: ${JSON.stringify(counters)}`);
        assert.ok(counters.compressedOut[compressor] > 0, `no ${compressor} replies: ${JSON.stringify(counters)}`);
      }
      assert.ok(counters.awaitedHelloOut >= 2, JSON.stringify(counters));
    }
    events.checkPairing();
    step('ok');
  } finally {
    await client.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
