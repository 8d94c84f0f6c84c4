// varanus::wire — bounded copies of documents: what an event needs to keep
// of a command or reply that its sinks will only show the start of.
//
// A sink renders at most maxDocumentLength characters of a document (1000 by
// default). Copying a whole 1 MB insert or a 16 MB reply into every event,
// only for the sink thread to show its first kilobyte, costs the I/O thread
// a large allocation, page faults and a memcpy per message. A bounded copy
// keeps every element, in order, until the JSON text of what was kept is
// surely longer than `jsonLength` characters (counting lower bounds of each
// element's JSON: a string of n bytes is at least n + 2 characters, a number
// at least 1, ...); the element where that happens is kept in part (a string
// or binary cut, a sub-document bounded the same way), and everything after
// it is left out. Any bounded JSON rendering with a budget up to jsonLength
// is then the same text for the copy as for the whole document, and the copy
// says that it was cut.
#pragma once

#include <cstddef>

#include "varanus/wire/bson_view.hpp"
#include "varanus/wire/command.hpp"

namespace varanus::wire {

struct CopyBound {
  /// Characters of JSON the renderers may show, at most; 0 = everything
  /// (whole copies).
  std::size_t jsonLength = 0;
  /// Also keep what the type-name rendering (values redaction) needs: there
  /// a string of any length shows as "string", so elements after a long
  /// string are still shown and are kept.
  bool typeNames = false;

  bool unlimited() const noexcept { return jsonLength == 0; }
  friend bool operator==(const CopyBound&, const CopyBound&) = default;
};

struct BoundedBytes {
  BsonBytes bytes;       ///< a valid BSON document
  bool cut = false;      ///< something of the original was left out (a value cut or an element)
  bool omitted = false;  ///< whole elements were left out (implies cut); a string or binary
                         ///< cut short does not change the type-name rendering, this does
};

/// A copy of `doc` bounded by `bound`. Small documents (a few times the
/// bound) are copied whole, into `spare` when given (its capacity is reused:
/// no allocation when it is large enough). An invalid document yields `{}`, cut.
BoundedBytes bounded_copy(BsonView doc, const CopyBound& bound, BsonBytes spare = {});
/// The same for a document already owned (one the caller built): moved
/// when small enough to be kept whole, else copied bounded.
BoundedBytes bounded_copy(BsonBytes&& doc, const CopyBound& bound);

/// merged_command (the body with each kind-1 sequence appended as an array),
/// bounded by `bound` as a whole: a 1 MB document in an insert's `documents`
/// sequence is never copied in full.
BoundedBytes bounded_merged_command(const CommandView& view, const CopyBound& bound,
                                    BsonBytes spare = {});

}  // namespace varanus::wire
