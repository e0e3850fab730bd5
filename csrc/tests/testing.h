// A tiny std-only test harness for the C++ tests.
//
//   TEST(matvec_matches_scalar) { CHECK(x > 0); CHECK_EQ(a, b); }
//   SAGE_TEST_MAIN()   // once per test binary
//
// A failed CHECK reports file:line and the expression, marks the test failed and carries on.
// main prints "N passed, M failed" and returns nonzero if anything failed; an argument runs only
// the tests whose names contain it.
#pragma once

#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace sage::testing {

struct TestCase {
    const char* name;
    void (*fn)();
};

inline std::vector<TestCase>& registry() {
    static std::vector<TestCase> tests;
    return tests;
}

inline int& current_failures() {
    static int failures = 0;
    return failures;
}

struct Registrar {
    Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

inline void report_failure(const char* file, int line, const std::string& what) {
    std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what.c_str());
    ++current_failures();
}

template <typename A, typename B>
void check_eq(const A& a, const B& b, const char* as, const char* bs, const char* file, int line) {
    if (a == b) return;
    std::ostringstream os;
    os << as << " == " << bs << " (" << a << " vs " << b << ")";
    report_failure(file, line, os.str());
}

inline int run_all(int argc, char** argv) {
    const char* filter = argc > 1 ? argv[1] : nullptr;
    int passed = 0, failed = 0;
    for (const TestCase& t : registry()) {
        if (filter != nullptr && std::strstr(t.name, filter) == nullptr) continue;
        current_failures() = 0;
        try {
            t.fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: unexpected exception: %s\n", t.name, e.what());
            ++current_failures();
        }
        if (current_failures() == 0) {
            ++passed;
            std::printf("[ ok ] %s\n", t.name);
        } else {
            ++failed;
            std::printf("[FAIL] %s (%d checks failed)\n", t.name, current_failures());
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

}  // namespace sage::testing

#define TEST(name)                                                                          \
    static void sage_test_##name();                                                         \
    static const ::sage::testing::Registrar sage_registrar_##name(#name, sage_test_##name); \
    static void sage_test_##name()

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) ::sage::testing::report_failure(__FILE__, __LINE__, #cond); \
    } while (0)

#define CHECK_EQ(a, b) ::sage::testing::check_eq((a), (b), #a, #b, __FILE__, __LINE__)

#define SAGE_TEST_MAIN()                             \
    int main(int argc, char** argv) {                \
        return ::sage::testing::run_all(argc, argv); \
    }
