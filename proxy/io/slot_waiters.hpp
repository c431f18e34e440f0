// SlotWaiters: the parties waiting for a free slot of one pool (gated_pool.hpp), oldest first, and
// the slots promised to them.
//
// A slot that comes back while someone waits is PROMISED to the oldest waiter (grant_one): it stays
// in the pool's free list, but nobody else may take it (the pool counts promised() slots as taken).
// One slot back, one waiter granted: never more waiters than slots.
//
// Nothing runs when a slot comes back: that happens inside another connection's code (the
// destructor of its last lease on the slot), and running the waiter's relay from there would
// re-enter code that is halfway through its own work. The pool's owner wakes the granted waiters at
// a safe point, between two turns of its event loop (wake()): each granted waiter once, oldest grant
// first. A woken waiter takes its promised slot in that call (claim), or the promise passes to the
// next waiter in the queue.
//
// A waiter is a SlotWait its party owns. Destroying it (or leave()) takes it out of the queue and
// passes a promise it held on, so the queue never points at a dead waiter, whatever order things
// are torn down in. A waiter is in the queue at most once and woken at most once per promise.
//
// One thread (the pool's worker), no locks.
#pragma once

#include <cstddef>
#include <functional>

namespace ztp::io {

class SlotWaiters;

class SlotWait {
public:
    // `on_wake` runs from SlotWaiters::wake() when a slot was promised to this waiter.
    explicit SlotWait(std::function<void()> on_wake) : on_wake_(std::move(on_wake)) {}
    ~SlotWait() { leave(); }
    // Not movable: the queue points at it.
    SlotWait(const SlotWait&) = delete;
    SlotWait& operator=(const SlotWait&) = delete;

    // In a queue, with or without a promise, and not yet woken for it.
    bool waiting() const { return state_ == State::queued || state_ == State::granted; }
    // In the queue, no slot promised yet.
    bool queued() const { return state_ == State::queued; }
    // A slot is promised to it (it may claim it before it is woken).
    bool granted() const { return state_ == State::granted || state_ == State::waking; }
    // Stops waiting; a promise it held passes to the next waiter.
    void leave();

private:
    friend class SlotWaiters;
    enum class State { idle, queued, granted, waking };

    std::function<void()> on_wake_;
    SlotWaiters* list_ = nullptr;  // while not idle
    SlotWait* prev_ = nullptr;     // in the queue or the granted list
    SlotWait* next_ = nullptr;
    State state_ = State::idle;
};

class SlotWaiters {
public:
    SlotWaiters() = default;
    // Waiters still linked are detached (they become idle): none may point at a dead list.
    ~SlotWaiters();
    SlotWaiters(const SlotWaiters&) = delete;
    SlotWaiters& operator=(const SlotWaiters&) = delete;

    // `w` waits at the tail of the queue (nothing if it already waits or holds a promise).
    void enqueue(SlotWait& w);
    // A slot came back: the oldest queued waiter is promised it. False when nobody waits.
    bool grant_one();
    // `w` takes the slot promised to it: true, and it no longer waits. False without a promise.
    bool claim(SlotWait& w);
    // The safe point: every granted waiter is woken once, oldest grant first, including those
    // granted while it runs. Not re-entrant (a waiter's on_wake must not call it). Returns how many.
    size_t wake();

    // Free slots promised and not yet claimed: nobody but their waiters may take them.
    size_t promised() const { return granted_.size + (waking_ != nullptr ? 1 : 0); }
    // Waiters in the queue without a promise.
    size_t queued() const { return queue_.size; }

private:
    friend class SlotWait;
    struct Chain {
        SlotWait* head = nullptr;
        SlotWait* tail = nullptr;
        size_t size = 0;
        void push_back(SlotWait* w);
        void remove(SlotWait* w);
        SlotWait* pop_front();
    };
    // `w` gives up its place, or the promise it held (which goes to the next queued waiter).
    void leave(SlotWait& w);
    void pass_on();

    Chain queue_;    // waiting, no promise yet
    Chain granted_;  // promised a slot, not woken yet
    SlotWait* waking_ = nullptr;  // being woken now, its promise not yet claimed
    bool in_wake_ = false;
};

}  // namespace ztp::io
