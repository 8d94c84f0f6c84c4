#!/usr/bin/env node
// The Node.js `mongodb` driver authenticating (SCRAM-SHA-256, SCRAM-SHA-1,
// and the negotiated default with speculative authentication) against a
// server that implements SCRAM: varanus-stub, or varanus in front of it.
//
//   node auth.js HOST:PORT USER PASSWORD
//
// Each mechanism must succeed with PASSWORD and fail with a wrong one.
// Exits non-zero on the first failed assertion.
'use strict';

const assert = require('node:assert/strict');
const { MongoClient } = require('mongodb');

async function attempt(address, user, password, mechanism) {
  const mech = mechanism ? `&authMechanism=${mechanism}` : '';
  const uri = `mongodb://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${address}/` +
      `?directConnection=true&authSource=admin&serverSelectionTimeoutMS=5000${mech}`;
  const client = new MongoClient(uri);
  try {
    await client.connect();
    const r = await client.db('admin').command({ ping: 1 });
    return r.ok;
  } finally {
    await client.close();
  }
}

async function main() {
  const [address, user, password] = process.argv.slice(2);
  assert.ok(address && user && password, 'usage: node auth.js HOST:PORT USER PASSWORD');
  for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1', null]) {
    assert.equal(await attempt(address, user, password, mechanism), 1, `${mechanism} ping`);
    await assert.rejects(attempt(address, user, `wrong-${password}`, mechanism),
                         /Authentication failed/, `${mechanism} with a wrong password`);
  }
  console.log('auth.js: SCRAM-SHA-256, SCRAM-SHA-1 and the default authenticated');
}

main().catch((e) => {
  console.error(`auth.js: ${e.stack || e}`);
  process.exit(1);
});
