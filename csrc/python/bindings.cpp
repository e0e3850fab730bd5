// sage_edge._engine: a thin pybind11 layer over the C++ engine. Python-facing names and errors
// only; all logic lives in csrc/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/model_file.h"
#include "engine/session.h"
#include "kernels.h"
#include "sage_edge/sage_edge.h"

namespace py = pybind11;
namespace k = sage::kernels;

namespace {

// The active kernel table, or RuntimeError with the dispatch message (e.g. a bad
// SAGE_EDGE_KERNEL).
const k::KernelTable& active_kernels() {
    const k::KernelTable* t = k::try_active();
    if (t == nullptr) throw std::runtime_error(k::select_error());
    return *t;
}

std::vector<std::string> available_kernels() {
    const k::KernelTable* t[16];
    const int n = k::available(t, 16);
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) names.emplace_back(t[i]->name);
    return names;
}

py::bytes quantize_row_q8_0(py::array_t<float, py::array::c_style | py::array::forcecast> x,
                            py::object kernel) {
    if (x.ndim() != 1) throw std::invalid_argument("quantize_row_q8_0: x must be 1-D");
    const k::KernelTable* t = &active_kernels();
    if (!kernel.is_none()) {
        const std::string name = py::cast<std::string>(kernel);
        t = k::find(name.c_str());
        if (t == nullptr) throw std::invalid_argument("unknown or unavailable kernel: " + name);
    }
    const int64_t n = x.shape(0);
    std::string out(static_cast<size_t>(k::blocks_per_row(n)) * sizeof(k::BlockQ8_0), '\0');
    {
        py::gil_scoped_release release;
        t->quantize_row_q8_0(x.data(), reinterpret_cast<k::BlockQ8_0*>(out.data()), n);
    }
    return py::bytes(out);
}

}  // namespace

// ---- The engine: models and sessions (csrc/engine/session.h) ------------------------------------
//
// Errors: sage::Error becomes sage_edge.ModelFormatError for a missing or broken file, ValueError
// for a bad argument, MemoryError when an allocation at creation fails and RuntimeError otherwise
// (a SAGE_EDGE_KERNEL this CPU cannot run, sampling before feeding). Every call that computes
// releases the GIL.
namespace engine {

using sage::Error;
using sage::Status;

// Raises the Python exception matching a sage::Error's status.
void raise_engine_error(const Error& e) {
    switch (e.status()) {
        case Status::Io:
        case Status::Format:
            // Looked up when raised (the GIL is held): a namespace-level py::object would be
            // released after the interpreter has finalized.
            PyErr_SetString(py::module_::import("sage_edge.errors").attr("ModelFormatError").ptr(),
                            e.what());
            return;
        case Status::Argument:
            PyErr_SetString(PyExc_ValueError, e.what());
            return;
        case Status::Memory:
            PyErr_SetString(PyExc_MemoryError, e.what());
            return;
        default:
            PyErr_SetString(PyExc_RuntimeError, e.what());
            return;
    }
}

const char* attention_name(sage::Attention a) {
    switch (a) {
        case sage::Attention::Mha:
            return "mha";
        case sage::Attention::Gqa:
            return "gqa";
        default:
            return "askv";
    }
}

const char* dtype_name(sage::DType t) {
    switch (t) {
        case sage::DType::F32:
            return "f32";
        case sage::DType::Q8_0:
            return "q8_0";
        default:
            return "q4";
    }
}

const k::KernelTable& kernels_or_throw() {
    const k::KernelTable* t = k::try_active();
    if (t == nullptr) throw Error(Status::Kernel, k::select_error());
    return *t;
}

class PyModel {
  public:
    explicit PyModel(const std::string& path) {
        kernels_or_throw();  // a bad SAGE_EDGE_KERNEL is refused at load, as in the C API
        py::gil_scoped_release release;
        model_ = sage::Model::load(path);
    }

    py::dict info() const {
        const sage::Config& c = model_->config;
        py::dict d;
        d["vocab_size"] = c.vocab_size;
        d["n_layers"] = c.n_layers;
        d["d_model"] = c.d_model;
        d["n_heads"] = c.n_heads;
        d["n_kv_heads"] = c.n_kv_heads;
        d["d_head"] = c.d_head;
        d["d_ff"] = c.d_ff;
        d["n_families"] = c.n_families;
        d["attention"] = attention_name(c.attention);
        d["quantization"] = dtype_name(model_->quant);
        d["ticks_per_quarter"] = c.ticks_per_quarter;
        d["norm_eps"] = c.norm_eps;
        d["parameters"] = model_->parameters;
        d["file_bytes"] = model_->file_bytes;
        std::vector<uint32_t> horizons = model_->horizons;
        uint64_t budget = 0;
        for (uint32_t h : horizons) budget += h;
        d["horizons"] = horizons;
        d["budget"] = budget;
        return d;
    }

    // The vocabulary table the file carries (docs/format.md): family, kind, a and b of every id.
    py::dict vocabulary() const {
        const size_t V = model_->vocab.size();
        py::array_t<uint8_t> family(V), kind(V);
        py::array_t<int32_t> a(V), b(V);
        for (size_t i = 0; i < V; ++i) {
            const sage::TokenInfo& t = model_->vocab[i];
            family.mutable_at(i) = static_cast<uint8_t>(t.family);
            kind.mutable_at(i) = static_cast<uint8_t>(t.kind);
            a.mutable_at(i) = t.a;
            b.mutable_at(i) = t.b;
        }
        py::dict d;
        d["family"] = family;
        d["kind"] = kind;
        d["a"] = a;
        d["b"] = b;
        return d;
    }

    std::shared_ptr<const sage::Model> model() const { return model_; }

  private:
    std::shared_ptr<const sage::Model> model_;
};

// A session is not thread-safe (sage_edge.h: one session per thread), but Python code may share
// one between threads, and the calls that compute release the GIL. So every call takes the
// session's mutex, waiting for it with the GIL released: calls on one session from several
// threads run one after another, never at once. No call takes the GIL while holding the mutex,
// so the two locks cannot deadlock.
class PySession {
  public:
    PySession(const PyModel& model, uint64_t seed, int threads) : model_(model.model()) {
        if (threads < 1 || threads > 256)
            throw Error(Status::Argument, "threads must be in 1..256");
        sage::SessionOptions options;
        options.seed = seed;
        options.threads = threads;
        session_ = std::make_unique<sage::Session>(*model_, options, kernels_or_throw());
    }

    py::array_t<float> feed(py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens,
                            bool all_logits) {
        if (tokens.ndim() != 1)
            throw Error(Status::Argument, "tokens must be a 1-D sequence of ids");
        const size_t n = static_cast<size_t>(tokens.shape(0));
        const py::ssize_t V = model_->config.vocab_size;
        py::array_t<float> logits = all_logits
                                        ? py::array_t<float>({static_cast<py::ssize_t>(n), V})
                                        : py::array_t<float>(V);
        float* out = logits.mutable_data();
        const int32_t* ids = tokens.data();
        {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            session_->feed(ids, n, out, all_logits);
        }
        return logits;
    }

    int32_t sample(float temperature, int top_k, float top_p, float min_p) {
        const sage::SamplingParams p = params(temperature, top_k, top_p, min_p);
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mutex_);
        return session_->sample(p);
    }

    py::array_t<int32_t> generate(int64_t n, float temperature, int top_k, float top_p,
                                  float min_p) {
        if (n < 0) throw Error(Status::Argument, "n_tokens must be >= 0");
        const sage::SamplingParams p = params(temperature, top_k, top_p, min_p);
        py::array_t<int32_t> tokens(n);
        int32_t* out = tokens.mutable_data();
        {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            session_->generate(p, out, static_cast<size_t>(n));
        }
        return tokens;
    }

    void set_programs(const std::vector<int32_t>& programs) {
        Locked locked(*this);
        session_->set_programs(programs.data(), programs.size());
    }

    void reset() {
        Locked locked(*this);
        session_->reset();
    }

    uint64_t position() {
        Locked locked(*this);
        return session_->position();
    }

    uint64_t bars() {
        Locked locked(*this);
        return session_->bars();
    }

    // The bar the stream is in: (index, start in quarters, numerator, denominator).
    py::tuple bar() {
        const sage::BarInfo b = [&] {
            Locked locked(*this);
            return session_->bar();
        }();
        return py::make_tuple(b.index, b.start, b.numerator, b.denominator);
    }

    uint64_t dropped_events() {
        Locked locked(*this);
        return session_->dropped_events();
    }

    // Completed notes as (time, duration, pitch, velocity, program) tuples, oldest first.
    py::list pop_events() {
        py::list out;
        Locked locked(*this);
        sage::NoteEvent batch[256];
        for (size_t n; (n = session_->pop_events(batch, 256)) > 0;)
            for (size_t i = 0; i < n; ++i)
                out.append(py::make_tuple(batch[i].time, batch[i].duration, batch[i].pitch,
                                          batch[i].velocity, batch[i].program));
        return out;
    }

    // The grammar mask for the next token, [V] bool.
    static_assert(sizeof(bool) == 1, "numpy bool arrays are one byte per element");
    py::array_t<bool> allowed_next() {
        py::array_t<bool> mask(session_->model().config.vocab_size);
        Locked locked(*this);
        session_->allowed_next(reinterpret_cast<uint8_t*>(mask.mutable_data()));
        return mask;
    }

    py::dict memory() {
        const sage::MemoryReport r = [&] {
            Locked locked(*this);
            return session_->memory();
        }();
        py::dict d;
        d["weights_bytes"] = r.weights_bytes;
        d["activation_bytes"] = r.activation_bytes;
        d["kv_bytes"] = r.kv_bytes;
        d["total_bytes"] = r.total_bytes;
        return d;
    }

  private:
    // Holds the session's mutex for a call that needs the GIL too: waits for the mutex with the
    // GIL released, then keeps both until the end of the scope.
    class Locked {
      public:
        explicit Locked(PySession& s) : lock_(s.mutex_, std::defer_lock) {
            py::gil_scoped_release release;
            lock_.lock();
        }

      private:
        std::unique_lock<std::mutex> lock_;
    };

    static sage::SamplingParams params(float temperature, int top_k, float top_p, float min_p) {
        sage::SamplingParams p;
        p.temperature = temperature;
        p.top_k = top_k;
        p.top_p = top_p;
        p.min_p = min_p;
        sage::Session::check_sampling(p);
        return p;
    }

    std::shared_ptr<const sage::Model> model_;  // kept alive as long as the session
    std::unique_ptr<sage::Session> session_;
    std::mutex mutex_;
};

void bind(py::module_& m) {
    py::module_::import("sage_edge.errors");  // fail at import, not at the first error
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            raise_engine_error(e);
        }
    });

    py::class_<PyModel>(m, "Model", "A validated, memory-mapped .sage model file.")
        .def(py::init<const std::string&>(), py::arg("path"))
        .def("info", &PyModel::info, "Hyperparameters, quantization, horizons and sizes.")
        .def(
            "metadata_json", [](const PyModel& m) { return m.model()->metadata_json; },
            "The file's metadata JSON (validated at load): tokenizer configuration and more.")
        .def("vocabulary", &PyModel::vocabulary,
             "The file's vocabulary table: {'family', 'kind', 'a', 'b'} arrays indexed by id.");

    const sage::SamplingParams defaults;
    const float t0 = defaults.temperature, p0 = defaults.top_p, m0 = defaults.min_p;
    py::class_<PySession>(m, "Session", "A generation session: ring memories, sampler, grammar.")
        .def(py::init<const PyModel&, uint64_t, int>(), py::arg("model"), py::arg("seed") = 0,
             py::arg("threads") = 1)
        .def("feed", &PySession::feed, py::arg("tokens"), py::arg("all_logits") = false,
             "Run the model over tokens; logits [V] after the last one or [n, V] after each.")
        .def("sample", &PySession::sample, py::arg("temperature") = t0, py::arg("top_k") = 0,
             py::arg("top_p") = p0, py::arg("min_p") = m0,
             "Draw the next token under the grammar mask (not fed).")
        .def("generate", &PySession::generate, py::arg("n_tokens"), py::arg("temperature") = t0,
             py::arg("top_k") = 0, py::arg("top_p") = p0, py::arg("min_p") = m0,
             "Sample and feed n tokens; returns them.")
        .def("reset", &PySession::reset)
        .def("set_programs", &PySession::set_programs, py::arg("programs"))
        .def("pop_events", &PySession::pop_events)
        .def("memory", &PySession::memory)
        .def("allowed_next", &PySession::allowed_next)
        .def_property_readonly("position", &PySession::position)
        .def_property_readonly("bars", &PySession::bars)
        .def_property_readonly("bar", &PySession::bar)
        .def_property_readonly("dropped_events", &PySession::dropped_events);
}

}  // namespace engine

PYBIND11_MODULE(_engine, m) {
    m.doc() = "sage-edge C++ engine (kernels, sessions)";

    m.def("version", &sage_version, "The engine's version: the package's (pyproject.toml).");
    m.def("cpu_features", &k::cpu_features,
          "CPU features relevant to kernel dispatch, e.g. 'avx avx2 fma avx512f ...'.");
    m.def(
        "kernel", [] { return std::string(active_kernels().name); },
        "Name of the active kernel path; RuntimeError if SAGE_EDGE_KERNEL names an invalid one.");
    m.def("available_kernels", &available_kernels,
          "Kernel paths this CPU can run, scalar first and best last.");
    m.def("quantize_row_q8_0", &quantize_row_q8_0, py::arg("x"), py::arg("kernel") = py::none(),
          "Quantize a 1-D float32 array to Q8_0 and return the raw blocks (36 bytes each: f32 "
          "scale, 32 x int8), with the active kernel path or the one named.");
    m.attr("BLOCK_SIZE") = k::kBlockSize;
    // Facts defined once in C++ that the Python package asks for.
    const sage::SamplingParams sampling;
    py::dict default_sampling;
    default_sampling["temperature"] = sampling.temperature;
    default_sampling["top_k"] = sampling.top_k;
    default_sampling["top_p"] = sampling.top_p;
    default_sampling["min_p"] = sampling.min_p;
    m.attr("DEFAULT_SAMPLING") = default_sampling;
    m.attr("TEMPO_RANGE_BPM") = py::make_tuple(SAGE_TEMPO_MIN_BPM, SAGE_TEMPO_MAX_BPM);

    // The token kinds and attribute families of sage_edge.h (tests/test_vocab.py checks that
    // sage_edge/vocab.py says the same).
    py::dict kinds, families;
    kinds["PAD"] = int{SAGE_KIND_PAD};
    kinds["BOS"] = int{SAGE_KIND_BOS};
    kinds["EOS"] = int{SAGE_KIND_EOS};
    kinds["MASK"] = int{SAGE_KIND_MASK};
    kinds["BAR"] = int{SAGE_KIND_BAR};
    kinds["TIMESIG"] = int{SAGE_KIND_TIMESIG};
    kinds["POSITION"] = int{SAGE_KIND_POSITION};
    kinds["TEMPO"] = int{SAGE_KIND_TEMPO};
    kinds["PROGRAM"] = int{SAGE_KIND_PROGRAM};
    kinds["PITCH"] = int{SAGE_KIND_PITCH};
    kinds["PITCH_DRUM"] = int{SAGE_KIND_PITCH_DRUM};
    kinds["VELOCITY"] = int{SAGE_KIND_VELOCITY};
    kinds["DURATION"] = int{SAGE_KIND_DURATION};
    kinds["OTHER"] = int{SAGE_KIND_OTHER};
    families["SPECIAL"] = int{SAGE_FAMILY_SPECIAL};
    families["TIME"] = int{SAGE_FAMILY_TIME};
    families["PROGRAM"] = int{SAGE_FAMILY_PROGRAM};
    families["PITCH"] = int{SAGE_FAMILY_PITCH};
    families["VELOCITY"] = int{SAGE_FAMILY_VELOCITY};
    families["DURATION"] = int{SAGE_FAMILY_DURATION};
    m.attr("KINDS") = kinds;
    m.attr("FAMILIES") = families;

    engine::bind(m);  // Model, Session
}
