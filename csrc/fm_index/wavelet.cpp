#include "wavelet.hpp"

#include <algorithm>
#include <array>
#include <queue>

namespace rtv {
namespace {

struct Tree {
  std::vector<std::array<int32_t, 2>> child;  // internal nodes in BFS order, root = 0
  std::vector<uint64_t> codes = std::vector<uint64_t>(256, 0);
  std::vector<uint8_t> code_len = std::vector<uint8_t>(256, 0);
};

// Huffman tree over the symbol counts, renumbered breadth-first so the root is node 0.
Tree huffman_tree(const std::vector<uint64_t>& freq) {
  std::vector<uint64_t> f(freq);
  std::vector<int> symbols;
  for (int c = 0; c < 256; ++c)
    if (f[c] > 0) symbols.push_back(c);
  // A tree needs two leaves: pad with an unused symbol (it simply never occurs).
  for (int c = 0; symbols.size() < 2; ++c)
    if (f[c] == 0) symbols.push_back(c);

  // Merge nodes: ids 0..255 are leaves, 256+ internal; ties break on id for determinism.
  std::vector<std::array<int32_t, 2>> merged;
  using Item = std::pair<uint64_t, int32_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (int c : symbols) heap.push({f[c], c});
  while (heap.size() > 1) {
    Item a = heap.top();
    heap.pop();
    Item b = heap.top();
    heap.pop();
    merged.push_back({a.second, b.second});
    heap.push({a.first + b.first, static_cast<int32_t>(255 + merged.size())});
  }
  Tree t;
  struct Pending { int32_t id; uint64_t code; uint8_t len; };
  std::queue<Pending> bfs;
  bfs.push({heap.top().second, 0, 0});
  while (!bfs.empty()) {
    Pending p = bfs.front();
    bfs.pop();
    const auto& kids = merged[p.id - 256];
    std::array<int32_t, 2> slot{};
    for (int b = 0; b < 2; ++b) {
      const int32_t k = kids[b];
      const uint64_t code = p.code | (static_cast<uint64_t>(b) << p.len);
      if (k < 256) {
        slot[b] = ~k;
        t.codes[k] = code;
        t.code_len[k] = static_cast<uint8_t>(p.len + 1);
      } else {
        slot[b] = static_cast<int32_t>(t.child.size() + bfs.size() + 1);
        bfs.push({k, code, static_cast<uint8_t>(p.len + 1)});
      }
    }
    t.child.push_back(slot);
  }
  return t;
}

// Ones among bits [begin, end) of LSB-first words.
uint64_t count_ones(const std::vector<uint64_t>& bits, uint64_t begin, uint64_t end) {
  uint64_t ones = 0, p = begin;
  for (; p < end && (p & 63) != 0; ++p) ones += (bits[p >> 6] >> (p & 63)) & 1;
  for (; p + 64 <= end; p += 64) ones += popcount64(bits[p >> 6]);
  for (; p < end; ++p) ones += (bits[p >> 6] >> (p & 63)) & 1;
  return ones;
}

}  // namespace

void WaveletTree::write(Writer& out, const uint8_t* seq, uint64_t n, const Progress& progress) {
  std::vector<uint64_t> freq(256, 0);
  for (uint64_t i = 0; i < n; ++i) ++freq[seq[i]];
  const Tree t = huffman_tree(freq);

  // Node lengths give each node's slice of the concatenated bitvector.
  const size_t n_nodes = t.child.size();
  std::vector<uint64_t> node_len(n_nodes, 0);
  for (int c = 0; c < 256; ++c) {
    if (t.code_len[c] == 0 || freq[c] == 0) continue;
    int32_t v = 0;
    for (unsigned d = 0; d < t.code_len[c]; ++d) {
      node_len[v] += freq[c];
      v = t.child[v][(t.codes[c] >> d) & 1];
    }
  }
  std::vector<uint64_t> offset(n_nodes + 1, 0);
  for (size_t v = 0; v < n_nodes; ++v) offset[v + 1] = offset[v] + node_len[v];
  const uint64_t total_bits = offset[n_nodes];

  std::vector<uint64_t> bits(total_bits / 64 + 1, 0);
  std::vector<uint64_t> cursor(offset.begin(), offset.end() - 1);
  const uint64_t step = std::max<uint64_t>(n / 100, 1 << 20);
  // Per symbol, the nodes on its root-to-leaf path, so the hot loop follows no child links.
  std::vector<std::array<uint8_t, 64>> path(256);
  for (int c = 0; c < 256; ++c) {
    int32_t v = 0;
    for (unsigned d = 0; d < t.code_len[c]; ++d) {
      path[c][d] = static_cast<uint8_t>(v);
      v = t.child[v][(t.codes[c] >> d) & 1];
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t c = seq[i];
    const uint64_t code = t.codes[c];
    const uint8_t* nodes_on_path = path[c].data();
    for (unsigned d = 0, len = t.code_len[c]; d < len; ++d) {
      const uint64_t pos = cursor[nodes_on_path[d]]++;
      bits[pos >> 6] |= ((code >> d) & 1) << (pos & 63);
    }
    if (progress && (i + 1) % step == 0) progress(i + 1, n);
  }

  std::vector<Node> nodes(n_nodes);
  uint64_t ones = 0;
  for (size_t v = 0; v < n_nodes; ++v) {
    nodes[v].offset = offset[v];
    nodes[v].ones_before = ones;
    nodes[v].child[0] = t.child[v][0];
    nodes[v].child[1] = t.child[v][1];
    ones += count_ones(bits, offset[v], offset[v + 1]);
  }
  out.put_u64(n);
  out.put_vector(nodes);
  out.put_vector(t.codes);
  out.put_vector(t.code_len);
  HybridBitvector::write(out, bits, total_bits);
  if (progress) progress(n, n);
}

void WaveletTree::load(Reader& in) {
  size_ = in.get_u64();
  uint64_t n_nodes;
  nodes_ = in.get_array<Node>(n_nodes);
  n_nodes_ = static_cast<size_t>(n_nodes);
  codes_ = in.get_array_of<uint64_t>(256);
  code_len_ = in.get_array_of<uint8_t>(256);
  bits_.load(in);
  if (n_nodes == 0 || n_nodes > 255) in.fail("bad wavelet node count");
  for (uint64_t v = 0; v < n_nodes; ++v) {
    for (int b = 0; b < 2; ++b) {
      const int32_t c = nodes_[v].child[b];
      if (c >= 0 ? (static_cast<uint64_t>(c) <= v || static_cast<uint64_t>(c) >= n_nodes) : false)
        in.fail("bad wavelet child");
    }
    if (nodes_[v].offset > bits_.size()) in.fail("bad wavelet node offset");
  }
  // rank_pair and walk_level follow a symbol's code without looking at the node kinds: every
  // code must pass through internal nodes and end at its own leaf.
  for (int c = 0; c < 256; ++c) {
    if (code_len_[c] > 64) in.fail("bad wavelet code length");
    int32_t v = 0;
    for (unsigned d = 0; d < code_len_[c]; ++d) {
      const int32_t child = nodes_[v].child[(codes_[c] >> d) & 1];
      if (d + 1 < code_len_[c] ? child < 0 : child != ~c) in.fail("wavelet code does not match the tree");
      v = child;
    }
  }
}

void WaveletTree::access_many(std::vector<uint64_t>* lists, std::vector<uint64_t>* leaves) const {
  constexpr size_t kAhead = 16;  // payload prefetch distance; directories twice as far
  // Children have larger indices than their parent (checked on load): one pass in index order.
  for (size_t v = 0; v < n_nodes_; ++v) {
    std::vector<uint64_t>& in = lists[v];
    const Node& node = nodes_[v];
    const size_t m = in.size();
    std::vector<uint64_t>* out[2];
    bool leaf[2];
    for (int b = 0; b < 2; ++b) {
      leaf[b] = node.child[b] < 0;
      out[b] = leaf[b] ? &leaves[static_cast<uint8_t>(~node.child[b])] : &lists[node.child[b]];
    }
    for (size_t k = 0; k < m; ++k) {
      if (k + 2 * kAhead < m) bits_.prefetch_directory(node.offset + (in[k + 2 * kAhead] >> 32));
      if (k + kAhead < m) bits_.prefetch_payload(node.offset + (in[k + kAhead] >> 32));
      const uint64_t i = in[k] >> 32, id = in[k] & 0xFFFFFFFFu;
      bool b;
      const uint64_t ones = bits_.access_rank(node.offset + i, b) - node.ones_before;
      out[b]->push_back(((b ? ones : i - ones) << 32) | id);
    }
    in.clear();  // keeps its capacity for the next round of the same walks
  }
}

}  // namespace rtv
