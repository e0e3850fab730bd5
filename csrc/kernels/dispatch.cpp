// Kernel dispatch: which instruction-set paths this CPU can run, and which one the engine uses.
// Compiled with the baseline flags of the target (no -mavx2 here), so it runs on every CPU.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels_internal.h"

#if defined(SAGE_KERNELS_HAVE_X86)
#include <cpuid.h>
#endif
#if defined(SAGE_KERNELS_HAVE_NEON) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace sage::kernels {
namespace {

struct CpuFeatures {
    bool avx2 = false;        // AVX2 + FMA, and the OS saves the ymm state
    bool avx512vnni = false;  // AVX-512 F/BW/VL/VNNI, and the OS saves the zmm state
    bool neon = false;        // ASIMD
    bool neondot = false;     // ASIMD dot product (ARMv8.2 DotProd)
    std::string names;        // for cpu_features()
};

void add_name(std::string& names, const char* name) {
    if (!names.empty()) names += ' ';
    names += name;
}

CpuFeatures detect() {
    CpuFeatures f;
#if defined(SAGE_KERNELS_HAVE_X86)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        const bool osxsave = c & (1u << 27);
        const bool avx = c & (1u << 28);
        const bool fma = c & (1u << 12);
        uint64_t xcr0 = 0;
        if (osxsave) {
            unsigned lo = 0, hi = 0;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = (uint64_t{hi} << 32) | lo;
        }
        const bool os_ymm = (xcr0 & 0x6) == 0x6;    // SSE and AVX state
        const bool os_zmm = (xcr0 & 0xE6) == 0xE6;  // plus opmask, zmm0-15 high, zmm16-31
        unsigned b7 = 0, c7 = 0, d7 = 0, a7 = 0;
        const bool leaf7 = __get_cpuid_count(7, 0, &a7, &b7, &c7, &d7);
        const bool avx2 = leaf7 && (b7 & (1u << 5));
        const bool avx512f = leaf7 && (b7 & (1u << 16));
        const bool avx512bw = leaf7 && (b7 & (1u << 30));
        const bool avx512vl = leaf7 && (b7 & (1u << 31));
        const bool avx512vnni = leaf7 && (c7 & (1u << 11));
        if (avx && os_ymm) add_name(f.names, "avx");
        if (avx2 && os_ymm) add_name(f.names, "avx2");
        if (fma && os_ymm) add_name(f.names, "fma");
        if (os_zmm) {
            if (avx512f) add_name(f.names, "avx512f");
            if (avx512bw) add_name(f.names, "avx512bw");
            if (avx512vl) add_name(f.names, "avx512vl");
            if (avx512vnni) add_name(f.names, "avx512vnni");
        }
        f.avx2 = avx && avx2 && fma && os_ymm;
        f.avx512vnni = f.avx2 && avx512f && avx512bw && avx512vl && avx512vnni && os_zmm;
    }
#elif defined(SAGE_KERNELS_HAVE_NEON)
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP);
    f.neon = hw & HWCAP_ASIMD;
    f.neondot = f.neon && (hw & HWCAP_ASIMDDP);
#else
    f.neon = true;  // ASIMD is mandatory on AArch64; the dot product is not probed off Linux
#endif
    if (f.neon) add_name(f.names, "asimd");
    if (f.neondot) add_name(f.names, "asimddp");
#endif
    return f;
}

const CpuFeatures& features() {
    static const CpuFeatures f = detect();
    return f;
}

// Every compiled path, in order of preference (worst first), with whether this CPU runs it.
struct Candidate {
    const KernelTable* table;
    bool runnable;
};

int candidates(Candidate* out) {
    const CpuFeatures& f = features();
    int n = 0;
    out[n++] = {&kScalarTable, true};
#if defined(SAGE_KERNELS_HAVE_X86)
    out[n++] = {&kAvx2Table, f.avx2};
    out[n++] = {&kAvx512VnniTable, f.avx512vnni};
#endif
#if defined(SAGE_KERNELS_HAVE_NEON)
    out[n++] = {&kNeonTable, f.neon};
    out[n++] = {&kNeonDotTable, f.neondot};
#endif
    (void)f;
    return n;
}

constexpr int kMaxPaths = 8;
constexpr const char* kAllNames[] = {"scalar", "avx2", "avx512vnni", "neon", "neondot"};

struct Selection {
    const KernelTable* table = nullptr;
    std::string error;
};

const Selection& selection() {
    static const Selection s = [] {
        Selection sel;
        sel.table = choose(std::getenv("SAGE_EDGE_KERNEL"), &sel.error);
        return sel;
    }();
    return s;
}

}  // namespace

const KernelTable* choose(const char* forced, std::string* error) {
    Candidate c[kMaxPaths];
    const int n = candidates(c);
    if (forced == nullptr || forced[0] == '\0') {
        for (int i = n - 1; i >= 0; --i)
            if (c[i].runnable) return c[i].table;
    }
    std::string available;
    for (int i = 0; i < n; ++i) {
        if (!c[i].runnable) continue;
        if (std::strcmp(c[i].table->name, forced) == 0) return c[i].table;
        if (!available.empty()) available += ", ";
        available += c[i].table->name;
    }
    bool known = false;
    for (const char* name : kAllNames) known = known || std::strcmp(name, forced) == 0;
    if (error != nullptr) {
        *error = std::string("SAGE_EDGE_KERNEL=") + forced +
                 (known ? ": not available on this CPU" : ": unknown kernel path") +
                 " (available: " + available + ")";
    }
    return nullptr;
}

const KernelTable& active() {
    const Selection& s = selection();
    if (s.table == nullptr) {
        std::fprintf(stderr, "sage-edge: %s\n", s.error.c_str());
        std::abort();
    }
    return *s.table;
}

const KernelTable* try_active() {
    return selection().table;
}

const char* select_error() {
    const Selection& s = selection();
    return s.table == nullptr ? s.error.c_str() : nullptr;
}

int available(const KernelTable** out, int max_out) {
    Candidate c[kMaxPaths];
    const int n = candidates(c);
    int k = 0;
    for (int i = 0; i < n; ++i) {
        if (!c[i].runnable) continue;
        if (k >= max_out) break;
        if (out != nullptr) out[k] = c[i].table;
        ++k;
    }
    return k;
}

const KernelTable* find(const char* name) {
    if (name == nullptr) return nullptr;
    Candidate c[kMaxPaths];
    const int n = candidates(c);
    for (int i = 0; i < n; ++i)
        if (c[i].runnable && std::strcmp(c[i].table->name, name) == 0) return c[i].table;
    return nullptr;
}

const char* cpu_features() {
    return features().names.c_str();
}

}  // namespace sage::kernels
