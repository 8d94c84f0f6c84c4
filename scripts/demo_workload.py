"""The README demo's workload: a little of everything varanus reports."""
import sys

import pymongo
from pymongo.errors import DuplicateKeyError, OperationFailure

client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
coll = client.shop.orders
coll.drop()
coll.insert_many([{"_id": i, "sku": f"sku-{i % 7}", "qty": i} for i in range(25)])
print("demo: found", len(list(coll.find({"sku": "sku-3"}).batch_size(2))), "orders of sku-3")
coll.update_one({"_id": 1}, {"$set": {"qty": 100}})
coll.delete_one({"_id": 2})
print("demo: count =", coll.count_documents({}))
try:
    coll.insert_one({"_id": 3})
except DuplicateKeyError:
    print("demo: duplicate key reported, as mongod would")
try:
    client.shop.command("frobnicate")
except OperationFailure as exc:
    print("demo: unknown command failed with code", exc.code)
try:
    client.admin.command("saslStart", 1, mechanism="PLAIN", payload=b"\0alice\0secret")
except OperationFailure:
    print("demo: saslStart refused (its payload is redacted in the events)")
client.close()
