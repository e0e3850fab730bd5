// A tiny persistent thread pool for intra-op parallelism: a matrix-vector product is split into
// contiguous row ranges, one per thread. Threads are started once, with the session; running a
// task allocates nothing (a function pointer and a context, no std::function).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace sage {

class ThreadPool {
  public:
    // `threads` workers in all, the calling thread included (1 = no extra thread).
    explicit ThreadPool(int threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return static_cast<int>(workers_.size()) + 1; }

    // Calls task(context, i) for every i in [0, size()), i = 0 on the calling thread, and
    // returns when all have finished.
    void run(void (*task)(void* context, int index), void* context);

  private:
    void worker_loop(int index);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable start_, done_;
    void (*task_)(void*, int) = nullptr;
    void* context_ = nullptr;
    uint64_t generation_ = 0;  // bumped for every task, so a worker runs each task once
    int pending_ = 0;          // workers still running the current task
    bool stopping_ = false;
};

}  // namespace sage
