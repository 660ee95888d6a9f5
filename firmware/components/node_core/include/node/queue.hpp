// Bounded offline queue: a byte ring of (topic, payload) records. When a new record does not fit,
// the oldest are dropped and counted; a record larger than the whole ring is refused.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace node {

template <size_t Capacity>
class MessageQueue {
    static_assert(Capacity >= 16, "queue too small");

public:
    /// Append; false (and nothing dropped) when the record can never fit.
    bool push(const char* topic, size_t topic_len, const char* payload, size_t payload_len) {
        const size_t need = kHeader + topic_len + payload_len;
        if (topic_len > 0xffff || payload_len > 0xffff || need > Capacity) return false;
        while (Capacity - used_ < need) drop_oldest();
        uint8_t header[kHeader] = {static_cast<uint8_t>(topic_len >> 8), static_cast<uint8_t>(topic_len),
                                   static_cast<uint8_t>(payload_len >> 8), static_cast<uint8_t>(payload_len)};
        write(header, kHeader);
        write(reinterpret_cast<const uint8_t*>(topic), topic_len);
        write(reinterpret_cast<const uint8_t*>(payload), payload_len);
        ++count_;
        return true;
    }

    /// Copy the oldest record out (NUL-terminated); false when empty or a buffer is too small.
    bool peek(char* topic, size_t topic_cap, char* payload, size_t payload_cap, size_t* payload_len) const {
        if (count_ == 0) return false;
        size_t tl, pl;
        lengths(&tl, &pl);
        if (tl + 1 > topic_cap || pl + 1 > payload_cap) return false;
        read(head_ + kHeader, reinterpret_cast<uint8_t*>(topic), tl);
        read(head_ + kHeader + tl, reinterpret_cast<uint8_t*>(payload), pl);
        topic[tl] = 0;
        payload[pl] = 0;
        *payload_len = pl;
        return true;
    }

    /// Remove the oldest record (after it was sent).
    void pop() {
        if (count_ == 0) return;
        size_t tl, pl;
        lengths(&tl, &pl);
        const size_t n = kHeader + tl + pl;
        head_ = (head_ + n) % Capacity;
        used_ -= n;
        --count_;
    }

    void clear() {
        head_ = used_ = count_ = 0;
    }

    size_t count() const { return count_; }
    size_t bytes() const { return used_; }
    uint32_t dropped() const { return dropped_; }
    static constexpr size_t capacity() { return Capacity; }

private:
    static constexpr size_t kHeader = 4;

    void drop_oldest() {
        pop();
        ++dropped_;
    }
    void lengths(size_t* tl, size_t* pl) const {
        uint8_t h[kHeader];
        read(head_, h, kHeader);
        *tl = static_cast<size_t>(h[0]) << 8 | h[1];
        *pl = static_cast<size_t>(h[2]) << 8 | h[3];
    }
    void write(const uint8_t* src, size_t n) {
        size_t tail = (head_ + used_) % Capacity;
        const size_t first = n < Capacity - tail ? n : Capacity - tail;
        memcpy(buf_ + tail, src, first);
        memcpy(buf_, src + first, n - first);
        used_ += n;
    }
    void read(size_t at, uint8_t* dst, size_t n) const {
        at %= Capacity;
        const size_t first = n < Capacity - at ? n : Capacity - at;
        memcpy(dst, buf_ + at, first);
        memcpy(dst + first, buf_, n - first);
    }

    uint8_t buf_[Capacity];
    size_t head_ = 0;
    size_t used_ = 0;
    size_t count_ = 0;
    uint32_t dropped_ = 0;
};

}  // namespace node
