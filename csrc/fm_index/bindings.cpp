// Python bindings: convert arguments, release the GIL around C++ work, map exceptions.
// No index logic lives here.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <memory>

#include "build.hpp"
#include "checksum.hpp"
#include "fm_index.hpp"
#include "shard_file.hpp"

namespace py = pybind11;
using rtv::Shard;

namespace {

using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

template <class Values>
Int64Array to_array(const Values& values) {
  Int64Array out(static_cast<py::ssize_t>(values.size()));
  auto* p = out.mutable_data();
  for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<int64_t>(values[i]);
  return out;
}

std::string bytes_arg(const py::bytes& b) { return std::string(b); }

// (documents, offsets) as two int64 arrays.
py::tuple occurrence_arrays(const std::vector<rtv::Occurrence>& occ) {
  Int64Array docs(static_cast<py::ssize_t>(occ.size())), offsets(static_cast<py::ssize_t>(occ.size()));
  for (size_t i = 0; i < occ.size(); ++i) {
    docs.mutable_data()[i] = static_cast<int64_t>(occ[i].doc);
    offsets.mutable_data()[i] = static_cast<int64_t>(occ[i].offset);
  }
  return py::make_tuple(docs, offsets);
}

// Accepts bytes, bytearray, memoryview or a uint8 numpy array without copying.
py::buffer_info byte_buffer(const py::buffer& buf) {
  py::buffer_info info = buf.request();
  if (info.itemsize != 1 || info.ndim != 1 || (info.strides.size() == 1 && info.strides[0] != 1))
    throw py::value_error("text must be a contiguous 1-D buffer of bytes (bytes or a uint8 array)");
  return info;
}

}  // namespace

PYBIND11_MODULE(_fm_index, m) {
  m.doc() = "Byte-level FM-index shards (SA-IS suffix array, Huffman wavelet tree over the BWT).";
  m.attr("FORMAT_VERSION") = rtv::kFormatVersion;

  static py::exception<rtv::FormatError> format_error(m, "FormatError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const rtv::FormatError& e) {
      PyErr_SetString(format_error.ptr(), e.what());
    } catch (const rtv::IoError& e) {
      // OSError(errno, message, filename) becomes FileNotFoundError etc. by errno.
      py::object err = py::module_::import("builtins").attr("OSError")(e.code().value(), e.code().message(), e.path());
      PyErr_SetObject(PyExc_OSError, err.ptr());
    }
  });

  m.def(
      "build_shard",
      [](const py::buffer& text, const std::string& path, uint32_t sa_sample, uint32_t isa_sample,
         const py::object& progress) {
        py::buffer_info info = byte_buffer(text);
        rtv::BuildProgress cb;
        if (!progress.is_none()) {
          cb = [&progress](const char* stage, uint64_t done, uint64_t total) {
            py::gil_scoped_acquire gil;
            progress(stage, done, total);
          };
        }
        py::gil_scoped_release release;
        rtv::build_shard(static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size), path, sa_sample,
                         isa_sample, cb);
      },
      py::arg("text"), py::arg("path"), py::arg("sa_sample") = 32, py::arg("isa_sample") = 32,
      py::arg("progress") = py::none(),
      "Build one shard file from documents each terminated by a 0xFF byte (suffix array by SA-IS). "
      "progress(stage, done, total) is called at most ~100 times per stage.");

  m.def(
      "checksum64",
      [](const py::buffer& data) {
        py::buffer_info info = byte_buffer(data);
        py::gil_scoped_release release;
        return rtv::checksum64(info.ptr, static_cast<size_t>(info.size));
      },
      py::arg("data"),
      "The 64-bit XXH64 hash (seed 0) of a contiguous byte buffer, as shards use for their body and "
      "the manifest for the other files of an index.");

  py::class_<Shard, std::shared_ptr<Shard>>(m, "Shard")
      .def(py::init<const std::string&, bool>(), py::arg("path"), py::arg("verify") = true,
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("n_docs", &Shard::n_docs)
      .def_property_readonly("text_bytes", &Shard::text_bytes)
      .def_property_readonly("index_bytes", &Shard::index_bytes)
      .def_property_readonly("sa_sample", &Shard::sa_sample)
      .def_property_readonly("isa_sample", &Shard::isa_sample)
      .def_property_readonly("format_version", &Shard::format_version)
      .def_property_readonly("checksum", &Shard::checksum)
      .def_property_readonly("has_pair_table", &Shard::has_pair_table)
      .def("doc_lengths", [](const Shard& s) { return to_array(s.doc_lengths()); })
      .def(
          "count",
          [](const Shard& s, const py::bytes& pattern) {
            std::string p = bytes_arg(pattern);
            py::gil_scoped_release release;
            return s.count(p);
          },
          py::arg("pattern"))
      .def(
          "count_many",
          [](const Shard& s, const std::vector<std::string>& patterns, size_t group, unsigned threads) {
            std::vector<uint64_t> counts;
            {
              py::gil_scoped_release release;
              counts = s.count_many(patterns, group, threads);
            }
            return to_array(counts);
          },
          py::arg("patterns"), py::arg("group") = Shard::kDefaultGroup, py::arg("threads") = Shard::kAutoThreads,
          "count() of every pattern; group > 1 interleaves that many searches (1: one after another); "
          "threads: 0 = the machine's, for large requests.")
      .def(
          "locate",
          [](const Shard& s, const py::bytes& pattern, uint64_t offset, uint64_t limit) {
            std::string p = bytes_arg(pattern);
            std::vector<rtv::Occurrence> occ;
            {
              py::gil_scoped_release release;
              occ = s.locate(p, offset, limit);
            }
            return occurrence_arrays(occ);
          },
          py::arg("pattern"), py::arg("offset") = 0, py::arg("limit") = 1000)
      .def(
          "locate_rows",
          [](const Shard& s, const Int64Array& rows, size_t group) {
            if (rows.ndim() != 1) throw py::value_error("rows must be a 1-D array");
            std::vector<rtv::Occurrence> occ;
            {
              py::gil_scoped_release release;
              occ = s.locate_rows(rows.data(), static_cast<size_t>(rows.size()), group);
            }
            return occurrence_arrays(occ);
          },
          py::arg("rows"), py::arg("group") = Shard::kDefaultGroup,
          "(documents, offsets) of suffix-array rows (from window_ranges), in the order given; group: "
          "walks to the samples run in lockstep (1: one after another).")
      .def(
          "window_ranges",
          [](const Shard& s, const py::bytes& text, const Int64Array& starts, const Int64Array& lengths, size_t group,
             unsigned threads) {
            if (starts.ndim() != 1 || lengths.ndim() != 1 || starts.size() != lengths.size())
              throw py::value_error("starts and lengths must be 1-D arrays of equal length");
            std::string t = bytes_arg(text);
            Int64Array lo(starts.size()), hi(starts.size());
            auto* plo = reinterpret_cast<uint64_t*>(lo.mutable_data());
            auto* phi = reinterpret_cast<uint64_t*>(hi.mutable_data());
            {
              py::gil_scoped_release release;
              s.window_ranges(t, starts.data(), lengths.data(), static_cast<size_t>(starts.size()), plo, phi, group,
                              threads);
            }
            return py::make_tuple(lo, hi);
          },
          py::arg("text"), py::arg("starts"), py::arg("lengths"), py::arg("group") = Shard::kAutoGroup,
          py::arg("threads") = Shard::kAutoThreads,
          "Suffix-array rows (lo, hi) of each window text[start, start + length), searched as "
          "count_windows does (hi - lo is its count; both 0 when absent).")
      .def(
          "docs",
          [](const Shard& s, const py::bytes& pattern) {
            std::string p = bytes_arg(pattern);
            std::vector<uint64_t> d;
            {
              py::gil_scoped_release release;
              d = s.docs(p);
            }
            return to_array(d);
          },
          py::arg("pattern"))
      .def(
          "cnf",
          [](const Shard& s, const std::vector<std::vector<std::string>>& clauses) {
            std::vector<uint64_t> d;
            {
              py::gil_scoped_release release;
              d = s.cnf(clauses);
            }
            return to_array(d);
          },
          py::arg("clauses"))
      .def(
          "extract",
          [](const Shard& s, uint64_t doc) {
            std::string out;
            {
              py::gil_scoped_release release;
              out = s.extract(doc);
            }
            return py::bytes(out);
          },
          py::arg("doc"))
      .def(
          "snippet",
          [](const Shard& s, uint64_t doc, uint64_t offset, uint64_t width) {
            std::string out;
            {
              py::gil_scoped_release release;
              out = s.snippet(doc, offset, width);
            }
            return py::bytes(out);
          },
          py::arg("doc"), py::arg("offset"), py::arg("width"))
      .def(
          "extract_ranges",
          [](const Shard& s, const Int64Array& docs, const Int64Array& starts, const Int64Array& ends, size_t group,
             unsigned threads) {
            if (docs.ndim() != 1 || starts.ndim() != 1 || ends.ndim() != 1 || docs.size() != starts.size() ||
                docs.size() != ends.size())
              throw py::value_error("docs, starts and ends must be 1-D arrays of equal length");
            std::string out;
            std::vector<uint64_t> offsets;
            {
              py::gil_scoped_release release;
              out = s.extract_ranges(docs.data(), starts.data(), ends.data(), static_cast<size_t>(docs.size()), offsets,
                                     group, threads);
            }
            return py::make_tuple(py::bytes(out), to_array(offsets));
          },
          py::arg("docs"), py::arg("starts"), py::arg("ends"), py::arg("group") = Shard::kDefaultGroup,
          py::arg("threads") = Shard::kAutoThreads,
          "Bytes [starts[i], ends[i]) of documents docs[i] (ends clipped to each document) as (one bytes "
          "object, int64 offsets of length n + 1). group: LF walks run in lockstep with prefetching (1: "
          "one walk per range, one thread); threads: 0 = the machine's, for large requests. Same bytes "
          "either way.")
      .def(
          "windows_present",
          [](const Shard& s, const py::bytes& text, const Int64Array& starts, const Int64Array& lengths,
             unsigned threads) {
            if (starts.ndim() != 1 || lengths.ndim() != 1 || starts.size() != lengths.size())
              throw py::value_error("starts and lengths must be 1-D arrays of equal length");
            std::string t = bytes_arg(text);
            std::vector<uint8_t> out;
            std::vector<Shard::Match> matches;
            {
              py::gil_scoped_release release;
              out = s.windows_present(t, starts.data(), lengths.data(), static_cast<size_t>(starts.size()), threads,
                                      &matches);
            }
            py::array_t<bool> found(static_cast<py::ssize_t>(out.size()));
            std::copy(out.begin(), out.end(), found.mutable_data());
            Int64Array rows({static_cast<py::ssize_t>(matches.size()), py::ssize_t{4}});
            auto* p = rows.mutable_data();
            for (const Shard::Match& m : matches) {
              *p++ = m.start;
              *p++ = m.end - m.start;
              *p++ = static_cast<int64_t>(m.lo);
              *p++ = static_cast<int64_t>(m.hi);
            }
            return py::make_tuple(found, rows);
          },
          py::arg("text"), py::arg("starts"), py::arg("lengths"), py::arg("threads") = Shard::kAutoThreads,
          "(found, matches): whether each window text[start, start + length) occurs (as count_windows "
          "with existence_only), for windows in text order (starts and ends nondecreasing, e.g. sliding "
          "windows), decided by maximal matches (about one search step a byte where the text occurs); "
          "matches: int64 rows (start, length, lo, hi) of strings found to occur that hold a window, "
          "with their suffix-array rows [lo, hi).")
      .def(
          "count_windows",
          [](const Shard& s, const py::bytes& text, const Int64Array& starts, const Int64Array& lengths,
             bool existence_only, size_t group, unsigned threads) {
            if (starts.ndim() != 1 || lengths.ndim() != 1 || starts.size() != lengths.size())
              throw py::value_error("starts and lengths must be 1-D arrays of equal length");
            std::string t = bytes_arg(text);
            std::vector<uint64_t> out;
            {
              py::gil_scoped_release release;
              out = s.count_windows(t, starts.data(), lengths.data(), static_cast<size_t>(starts.size()),
                                    existence_only, group, threads);
            }
            return to_array(out);
          },
          py::arg("text"), py::arg("starts"), py::arg("lengths"), py::arg("existence_only") = false,
          py::arg("group") = Shard::kAutoGroup, py::arg("threads") = Shard::kAutoThreads,
          "Occurrences (0/1 with existence_only) of each window text[start, start + length). group: "
          "backward searches run in lockstep with prefetching (1: one after another; 0: serial for "
          "overlapping windows, 16 otherwise); threads: 0 = the machine's, for large requests (same "
          "results either way).");
}
