#!/usr/bin/env node
// The Node.js driver in front of a replica set through varanus (issue 21).
//
//   node replset.js URI LISTENERS NEXT_PRIMARY
//
// URI: varanus's first listener with replicaSet=rs0. LISTENERS: the
// comma-separated varanus listener addresses (from its member lines).
// NEXT_PRIMARY: the listener of the member that becomes primary after a
// step-down. Asserts: the driver's topology names only varanus listeners
// (it discovered the set through the rewritten hellos), a write succeeds,
// after replSetStepDown the driver finds the new primary at NEXT_PRIMARY and
// writes again. Exits non-zero on the first failed assertion.
'use strict';

const assert = require('node:assert/strict');
const { MongoClient } = require('mongodb');

const [uri, listenerList, nextPrimary] = process.argv.slice(2);
const listeners = new Set(listenerList.split(','));
const DEADLINE_MS = 20000;

async function waitFor(what, predicate) {
  const until = Date.now() + DEADLINE_MS;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 15000 });
  let latest = null;
  const everSeen = new Set();
  client.on('topologyDescriptionChanged', (ev) => {
    latest = ev.newDescription;
    for (const address of ev.newDescription.servers.keys()) everSeen.add(address);
  });
  await client.connect();
  const coll = client.db('t').collection('node');
  await coll.insertOne({ before: 1 });
  await waitFor('three members known', () => latest && latest.servers.size === 3);
  for (const address of everSeen) {
    assert.ok(listeners.has(address), `the driver saw ${address}, not a varanus listener`);
  }
  const primaryOf = () => {
    for (const [address, sd] of latest.servers) if (sd.type === 'RSPrimary') return address;
    return null;
  };
  assert.ok(listeners.has(primaryOf()), `primary ${primaryOf()}`);
  try {
    await client.db('admin').command({ replSetStepDown: 10 });
  } catch (e) {
    // mongod closes connections when it steps down: either outcome is fine
  }
  await waitFor(`the new primary ${nextPrimary}`, () => primaryOf() === nextPrimary);
  await coll.insertOne({ after: 1 });
  assert.equal(await coll.countDocuments({}), 2);
  for (const address of everSeen) {
    assert.ok(listeners.has(address), `the driver saw ${address}, not a varanus listener`);
  }
  await client.close();
  console.log(JSON.stringify({ ok: true, servers: [...everSeen] }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
