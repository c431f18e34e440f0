#include "proxy/io/slot_waiters.hpp"

#include <cassert>

namespace ztp::io {

void SlotWait::leave() {
    if (list_ != nullptr) list_->leave(*this);
}

void SlotWaiters::Chain::push_back(SlotWait* w) {
    w->prev_ = tail;
    w->next_ = nullptr;
    (tail != nullptr ? tail->next_ : head) = w;
    tail = w;
    ++size;
}

void SlotWaiters::Chain::remove(SlotWait* w) {
    (w->prev_ != nullptr ? w->prev_->next_ : head) = w->next_;
    (w->next_ != nullptr ? w->next_->prev_ : tail) = w->prev_;
    w->prev_ = w->next_ = nullptr;
    --size;
}

SlotWait* SlotWaiters::Chain::pop_front() {
    SlotWait* w = head;
    if (w != nullptr) remove(w);
    return w;
}

SlotWaiters::~SlotWaiters() {
    for (Chain* c : {&queue_, &granted_})
        while (SlotWait* w = c->pop_front()) {
            w->list_ = nullptr;
            w->state_ = SlotWait::State::idle;
        }
    if (waking_ != nullptr) {
        waking_->list_ = nullptr;
        waking_->state_ = SlotWait::State::idle;
    }
}

void SlotWaiters::enqueue(SlotWait& w) {
    if (w.state_ != SlotWait::State::idle) return;
    w.list_ = this;
    w.state_ = SlotWait::State::queued;
    queue_.push_back(&w);
}

bool SlotWaiters::grant_one() {
    SlotWait* w = queue_.pop_front();
    if (w == nullptr) return false;
    w->state_ = SlotWait::State::granted;
    granted_.push_back(w);
    return true;
}

bool SlotWaiters::claim(SlotWait& w) {
    if (w.list_ != this) return false;
    switch (w.state_) {
        case SlotWait::State::granted: granted_.remove(&w); break;
        case SlotWait::State::waking: waking_ = nullptr; break;
        default: return false;
    }
    w.state_ = SlotWait::State::idle;
    w.list_ = nullptr;
    return true;
}

void SlotWaiters::pass_on() {
    // The promised slot is still free: the next waiter in line gets it, so a free slot is never
    // left unpromised while somebody waits.
    grant_one();
}

void SlotWaiters::leave(SlotWait& w) {
    switch (w.state_) {
        case SlotWait::State::queued: queue_.remove(&w); break;
        case SlotWait::State::granted:
            granted_.remove(&w);
            pass_on();
            break;
        case SlotWait::State::waking:
            waking_ = nullptr;
            pass_on();
            break;
        case SlotWait::State::idle: break;
    }
    w.state_ = SlotWait::State::idle;
    w.list_ = nullptr;
}

size_t SlotWaiters::wake() {
    assert(!in_wake_ && "SlotWaiters::wake re-entered from a waiter");
    in_wake_ = true;
    size_t woken = 0;
    while (SlotWait* w = granted_.pop_front()) {
        w->state_ = SlotWait::State::waking;
        waking_ = w;
        ++woken;
        w->on_wake_();
        // Still unclaimed (the waiter did not need the slot after all, or could not read now): it
        // waits no more, and the promise goes on. If the waiter left (or was destroyed), leave()
        // passed it on already and cleared waking_.
        if (waking_ != nullptr) {
            waking_ = nullptr;
            w->state_ = SlotWait::State::idle;
            w->list_ = nullptr;
            pass_on();
        }
    }
    in_wake_ = false;
    return woken;
}

}  // namespace ztp::io
