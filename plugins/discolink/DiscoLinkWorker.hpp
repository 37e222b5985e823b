/*
 * The non-audio thread each discoLink plugin owns: registry work, (re)connects, starts and
 * stops run here, never in run(). The plugin's audio thread and this thread share only
 * atomics; the DAW's main thread (setState, activate) hands requests over under `mutex`,
 * which run() never takes.
 */
#ifndef DISCOLINK_WORKER_HPP_INCLUDED
#define DISCOLINK_WORKER_HPP_INCLUDED

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

class DiscoLinkWorker
{
public:
    virtual ~DiscoLinkWorker() {}

    /* Start the thread; tick() then runs every `period_ms` and at once after wake(). */
    void startWorker(int period_ms)
    {
        fPeriod = std::chrono::milliseconds(period_ms);
        fThread = std::thread([this] { loop(); });
    }

    /* Ask for a tick now (from a non-audio thread: it takes the mutex). */
    void wake()
    {
        std::lock_guard<std::mutex> lock(mutex);
        fWoken = true;
        fCondition.notify_one();
    }

    /* Stop and join; call it first in the plugin's destructor. */
    void stopWorker()
    {
        {
            std::lock_guard<std::mutex> lock(mutex);
            fStopping = true;
            fCondition.notify_one();
        }
        if (fThread.joinable())
            fThread.join();
    }

protected:
    /* One round of work, on the worker thread, with `mutex` NOT held. */
    virtual void tick() = 0;

    /* From the plugin's activate(), with `mutex` held. */
    void markActivated() { fActivatedAt = std::chrono::steady_clock::now(); }

    /* In tick(): false for kSettleMs after the last activation. A DAW that loads a project
       may restore the state just after activating: the worker then waits before taking a
       device (or an id) that the state would replace. */
    bool settled()
    {
        std::lock_guard<std::mutex> lock(mutex);
        return std::chrono::steady_clock::now() - fActivatedAt >= std::chrono::milliseconds(kSettleMs);
    }

    static constexpr int kSettleMs = 150;

    std::mutex mutex;  // guards what the DAW's main thread hands to the worker

private:
    void loop()
    {
        std::unique_lock<std::mutex> lock(mutex);
        while (!fStopping)
        {
            lock.unlock();
            tick();
            lock.lock();
            if (!fWoken && !fStopping)
                fCondition.wait_for(lock, fPeriod);
            fWoken = false;
        }
    }

    std::thread fThread;
    std::condition_variable fCondition;
    std::chrono::milliseconds fPeriod{250};
    bool fWoken = false;
    bool fStopping = false;
    std::chrono::steady_clock::time_point fActivatedAt;
};

#endif
