// Huffman-shaped wavelet tree over a byte sequence (the BWT): frequent symbols get short
// codes, so a rank costs few bitvector lookups and the tree holds ~H0 bits per symbol.
// All nodes share one concatenated bitvector; a small node table gives each node's offset.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "hybrid_bitvector.hpp"
#include "serial.hpp"

namespace rtv {

class WaveletTree {
 public:
  using Progress = std::function<void(uint64_t done, uint64_t total)>;
  static void write(Writer& out, const uint8_t* seq, uint64_t n, const Progress& progress);
  void load(Reader& in);

  uint64_t size() const { return size_; }
  // Occurrences of c in seq[0, lo) and seq[0, hi), lo < hi, in one walk so the two chains of
  // cache misses overlap. The levels of one walk depend on each other, so what overlaps them is
  // knowing early where they will rank: first the directory lines of every level from the
  // in-memory group counts (prefetch_path), then, once those have arrived, the payload lines of
  // every level from the directory entries (prefetch_payloads), so a walk waits for about one
  // directory miss and one payload miss rather than one of each per level.
  // A backward search chains its walks: `next` is the byte it ranks after c (kNoNext: none), at
  // next_base + the lo and hi this call stores. Once this walk's payload lines are asked for, so
  // are the directory lines of that next walk (its positions bounded by this walk's directory
  // entries), so they arrive while this walk waits for its payload, and the next call passes
  // own_path = false instead of asking for them again.
  static constexpr int kNoNext = -1;
  void rank_pair(uint8_t c, uint64_t& lo, uint64_t& hi, int next = kNoNext, uint64_t next_base = 0,
                 bool own_path = true) const {
    const unsigned len = code_len_[c];
    if (len == 0) {
      lo = hi = 0;
      return;
    }
    const uint64_t code = codes_[c];
    Window w[2] = {{static_cast<int64_t>(lo), static_cast<int64_t>(lo)}, {static_cast<int64_t>(hi), static_cast<int64_t>(hi)}};
    if (own_path) prefetch_path(code, len, w);
    if (prefetch_payloads(code, len, w) && next != kNoNext && code_len_[next] != 0) {
      const auto base = static_cast<int64_t>(next_base);
      for (Window& x : w) x = {x.a + base, x.z + base};
      prefetch_path(codes_[next], code_len_[next], w);
    }
    rank_walk(code, len, lo, hi);
  }
  // rank_pair without prefetching, for walks whose lines are likely cached already.
  void rank_pair_cached(uint8_t c, uint64_t& lo, uint64_t& hi) const {
    const unsigned len = code_len_[c];
    if (len == 0) {
      lo = hi = 0;
      return;
    }
    rank_walk(codes_[c], len, lo, hi);
  }
  // rank_pair split into steps, so a caller can interleave many walks and overlap their cache
  // misses: walk_begin, then alternately walk_prefetch and walk_level until walk_level returns
  // true. lo and hi then hold exactly what rank_pair(c, lo, hi) would have stored.
  struct PairWalk {
    uint64_t lo, hi, code;
    int32_t node;
    unsigned depth, len;
  };
  // Starts a walk over w.lo, w.hi (set by the caller); false if c does not occur (lo = hi = 0).
  bool walk_begin(uint8_t c, PairWalk& w) const {
    w.len = code_len_[c];
    if (w.len == 0) {
      w.lo = w.hi = 0;
      return false;
    }
    w.code = codes_[c];
    w.node = 0;
    w.depth = 0;
    bits_.prefetch_directory(nodes_[0].offset + w.lo);
    bits_.prefetch_directory(nodes_[0].offset + w.hi);
    return true;
  }
  void walk_prefetch(const PairWalk& w) const {
    const Node& v = nodes_[w.node];
    bits_.prefetch_payload(v.offset + w.lo);
    bits_.prefetch_payload(v.offset + w.hi);
  }
  // One level of the walk; true when it is over. Otherwise prefetches the next level's directory.
  bool walk_level(PairWalk& w) const {
    const Node& v = nodes_[w.node];
    uint64_t ones_lo, ones_hi;
    bits_.rank1_pair(v.offset + w.lo, v.offset + w.hi, ones_lo, ones_hi);
    ones_lo -= v.ones_before;
    ones_hi -= v.ones_before;
    const unsigned b = (w.code >> w.depth) & 1;
    if (b) {
      w.lo = ones_lo;
      w.hi = ones_hi;
    } else {
      w.lo -= ones_lo;
      w.hi -= ones_hi;
    }
    if (w.lo >= w.hi || ++w.depth == w.len) return true;
    w.node = v.child[b];
    const Node& next = nodes_[w.node];
    bits_.prefetch_directory(next.offset + w.lo);
    bits_.prefetch_directory(next.offset + w.hi);
    return false;
  }
  // access_rank split into steps, like PairWalk: access_begin, then alternately access_prefetch
  // and access_level until access_level returns true; c then holds seq[i] and w.i its rank.
  struct AccessWalk {
    uint64_t i;
    int32_t node;
  };
  void access_begin(uint64_t i, AccessWalk& w) const {
    w.i = i;
    w.node = 0;
    bits_.prefetch_directory(nodes_[0].offset + i);
  }
  void access_prefetch(const AccessWalk& w) const { bits_.prefetch_payload(nodes_[w.node].offset + w.i); }
  bool access_level(AccessWalk& w, uint8_t& c) const {
    const Node& v = nodes_[w.node];
    bool b;
    const uint64_t ones = bits_.access_rank(v.offset + w.i, b) - v.ones_before;
    w.i = b ? ones : w.i - ones;
    const int32_t child = v.child[b];
    if (child < 0) {
      c = static_cast<uint8_t>(~child);
      return true;
    }
    w.node = child;
    bits_.prefetch_directory(nodes_[child].offset + w.i);
    return false;
  }
  // access_rank for many positions at once, level by level. lists[0] holds items
  // (i << 32 | id), i < 2^32, sorted by i; the other lists must be empty. Each item moves down
  // the tree through lists[node] (still sorted there: rank is monotonic) and ends in
  // leaves[seq[i]] as (rank(seq[i], i) << 32 | id), in the order of i. Reads every node's bits
  // front to back, prefetching ahead, so the cost is bandwidth rather than one miss per level.
  // lists: one per node (n_nodes()), leaves: 256; all lists are left empty but leaves.
  void access_many(std::vector<uint64_t>* lists, std::vector<uint64_t>* leaves) const;
  size_t n_nodes() const { return n_nodes_; }
  // seq[i], with rank(seq[i], i) stored into rank: one root-to-leaf walk (for LF).
  uint8_t access_rank(uint64_t i, uint64_t& rank) const {
    const Node* v = &nodes_[0];
    for (;;) {
      bool b;
      const uint64_t ones = bits_.access_rank(v->offset + i, b) - v->ones_before;
      i = b ? ones : i - ones;
      const int32_t c = v->child[b];
      if (c < 0) {
        rank = i;
        return static_cast<uint8_t>(~c);
      }
      v = &nodes_[c];
    }
  }

 private:
  struct Node {
    uint64_t offset;       // first bit of this node in bits_
    uint64_t ones_before;  // bits_.rank1(offset)
    int32_t child[2];      // node index, or ~symbol for a leaf
  };
  // The ranks of rank_pair, level by level, for a symbol with this code.
  void rank_walk(uint64_t code, unsigned len, uint64_t& lo, uint64_t& hi) const {
    const Node* v = &nodes_[0];
    for (unsigned d = 0;;) {
      const unsigned b = (code >> d) & 1;
      uint64_t ones_lo, ones_hi;
      bits_.rank1_pair(v->offset + lo, v->offset + hi, ones_lo, ones_hi);
      ones_lo -= v->ones_before;
      ones_hi -= v->ones_before;
      if (b) {
        lo = ones_lo;
        hi = ones_hi;
      } else {
        lo -= ones_lo;
        hi -= ones_hi;
      }
      if (lo >= hi || d + 1 == len) return;
      v = &nodes_[v->child[b]];
      ++d;
    }
  }
  // Positions [a, z] of a node that a walk's lo or hi can be at, as far as is known.
  struct Window {
    int64_t a, z;
  };
  // Once prefetch_path's directory lines have arrived: bounds the positions the walk of `code`
  // from the windows w (of the root) reaches at every level from the directory entries alone
  // (each window widens by < kBlockBits a level, not at all through an all-zeros / all-ones block)
  // and prefetches the payload lines of every level at once. On return w bounds the ranks the
  // walk will end with; false if it could not tell (a damaged file's positions, or an empty range).
  bool prefetch_payloads(uint64_t code, unsigned len, Window* w) const {
    const Node* v = &nodes_[0];
    for (unsigned d = 0;; ++d) {
      const bool merged = w[0].z >= w[1].a;
      if (merged) w[0].z = std::max(w[0].z, w[1].z);
      const unsigned b = (code >> d) & 1;
      const auto before = static_cast<int64_t>(v->ones_before);
      for (Window* x = w; x < w + (merged ? 1 : 2); ++x) {
        const uint64_t a = v->offset + static_cast<uint64_t>(x->a), z = v->offset + static_cast<uint64_t>(x->z);
        if (z > bits_.size()) return false;  // damaged: rank_pair reports it
        bits_.prefetch_payload_range(a, z);
        uint64_t lower_a, upper_a, lower_z, upper_z;
        bits_.directory_bounds(a, lower_a, upper_a);
        bits_.directory_bounds(z, lower_z, upper_z);
        if (b) {  // ones before a and before z, at least and at most
          x->a = static_cast<int64_t>(lower_a) - before;
          x->z = std::min(static_cast<int64_t>(upper_z) - before, x->z);
        } else {  // zeros: positions less ones
          x->a -= static_cast<int64_t>(upper_a) - before;
          x->z -= std::max<int64_t>(static_cast<int64_t>(lower_z) - before, 0);
        }
        x->a = std::max<int64_t>(x->a, 0);  // a block may start before the node
        if (x->z < x->a) return false;
      }
      if (merged) w[1] = w[0];
      if (d + 1 == len) return true;
      v = &nodes_[v->child[b]];  // internal: codes are checked against the tree on load
    }
  }
  // Bounds the positions the walk of `code` from the windows w (of the root; not changed) reaches
  // at every level, from the group counts alone (each window widens by < kGroupBits a level;
  // overlapping windows merge), and prefetches their directory lines.
  void prefetch_path(uint64_t code, unsigned len, const Window* start) const {
    Window w[2] = {start[0], start[1]};
    const Node* v = &nodes_[0];
    for (const Window& x : w) {
      if (x.a < 0 || x.a > x.z) return;
      bits_.prefetch_directory_range(v->offset + static_cast<uint64_t>(x.a), v->offset + static_cast<uint64_t>(x.z));
    }
    for (unsigned d = 0; d + 1 < len; ++d) {
      const unsigned b = (code >> d) & 1;
      const auto before = static_cast<int64_t>(v->ones_before);
      const Node* next = &nodes_[v->child[b]];
      const bool merged = w[0].z >= w[1].a;
      if (merged) w[0].z = std::max(w[0].z, w[1].z);
      for (Window* x = w; x < w + (merged ? 1 : 2); ++x) {
        if (v->offset + static_cast<uint64_t>(x->z) > bits_.size()) return;  // damaged: rank_pair reports it
        uint64_t lower_a, upper_a, lower_z, upper_z;
        bits_.rank_bounds(v->offset + x->a, lower_a, upper_a);
        bits_.rank_bounds(v->offset + x->z, lower_z, upper_z);
        if (b) {  // ones before a and before z, at least and at most
          x->a = static_cast<int64_t>(lower_a) - before;
          x->z = static_cast<int64_t>(upper_z) - before;
        } else {  // zeros: positions less ones
          x->a -= static_cast<int64_t>(upper_a) - before;
          x->z -= static_cast<int64_t>(lower_z) - before;
        }
        x->a = std::max<int64_t>(x->a, 0);  // a group may start before the node
        if (x->z < x->a) return;
        bits_.prefetch_directory_range(next->offset + x->a, next->offset + x->z);
      }
      if (merged) w[1] = w[0];
      v = next;
    }
  }
  uint64_t size_ = 0;
  const Node* nodes_ = nullptr;
  size_t n_nodes_ = 0;
  const uint64_t* codes_ = nullptr;    // per symbol: branch bits, root first, LSB-first
  const uint8_t* code_len_ = nullptr;  // per symbol: 0 = absent
  HybridBitvector bits_;
};

}  // namespace rtv
