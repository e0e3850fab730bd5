// A global operator new/delete that counts allocations, for tests that prove a code path allocates
// nothing (what makes the engine safe in a real-time audio thread). Replacing the global operators
// is per program: include this header in exactly one translation unit of a test executable.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace sage::testing {

inline std::atomic<bool> counting_allocations{false};
inline std::atomic<long> allocations{0};
inline std::atomic<unsigned long> allocated_bytes{0};  // through operator new only

inline void note_allocation() {
    if (counting_allocations.load(std::memory_order_relaxed))
        allocations.fetch_add(1, std::memory_order_relaxed);
}

inline void note_bytes(std::size_t n) {
    if (counting_allocations.load(std::memory_order_relaxed))
        allocated_bytes.fetch_add(n, std::memory_order_relaxed);
}

// Runs `body` and returns how many allocations it made.
template <typename Body>
long count_allocations(Body&& body) {
    allocations = 0;
    allocated_bytes = 0;
    counting_allocations = true;
    body();
    counting_allocations = false;
    return allocations.load();
}

// Runs `body` and returns how many bytes it asked operator new for.
template <typename Body>
unsigned long count_bytes(Body&& body) {
    count_allocations(body);
    return allocated_bytes.load();
}

}  // namespace sage::testing

// The replaced operator new allocates with malloc, so operator delete frees with free: correct,
// though GCC cannot see the pairing through the replacement.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
    sage::testing::note_allocation();
    sage::testing::note_bytes(n);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    return operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    sage::testing::note_allocation();
    sage::testing::note_bytes(n);
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
    return operator new(n, t);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
