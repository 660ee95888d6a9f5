#include <gtest/gtest.h>

#include <string>

#include "node/queue.hpp"

namespace {
std::string front(node::MessageQueue<64>& q, std::string* topic = nullptr) {
    char t[64], p[64];
    size_t len = 0;
    if (!q.peek(t, sizeof(t), p, sizeof(p), &len)) return "<empty>";
    if (topic) *topic = t;
    return std::string(p, len);
}
}  // namespace

TEST(Queue, FifoWithTopics) {
    node::MessageQueue<64> q;
    EXPECT_EQ(front(q), "<empty>");
    ASSERT_TRUE(q.push("t/1", 3, "one", 3));
    ASSERT_TRUE(q.push("t/2", 3, "two", 3));
    std::string topic;
    EXPECT_EQ(front(q, &topic), "one");
    EXPECT_EQ(topic, "t/1");
    q.pop();
    EXPECT_EQ(front(q, &topic), "two");
    EXPECT_EQ(topic, "t/2");
    q.pop();
    EXPECT_EQ(q.count(), 0u);
    EXPECT_EQ(q.bytes(), 0u);
}

TEST(Queue, FullDropsOldestAndCountsAcrossTheWrap) {
    node::MessageQueue<64> q;  // each record: 4 header + 1 topic + 10 payload = 15 bytes
    for (int i = 0; i < 20; ++i) {
        char body[11];
        snprintf(body, sizeof(body), "message%03d", i);
        ASSERT_TRUE(q.push("t", 1, body, 10));
        EXPECT_LE(q.bytes(), 64u);
    }
    EXPECT_EQ(q.count(), 4u);  // 4 x 15 = 60 <= 64
    EXPECT_EQ(q.dropped(), 16u);
    for (int i = 16; i < 20; ++i) {
        char body[11];
        snprintf(body, sizeof(body), "message%03d", i);
        EXPECT_EQ(front(q), body);  // the newest survive, in order, across the ring's wrap
        q.pop();
    }
}

TEST(Queue, RecordLargerThanTheRingIsRefusedAndNothingDropped) {
    node::MessageQueue<64> q;
    ASSERT_TRUE(q.push("t", 1, "keep", 4));
    std::string big(80, 'x');
    EXPECT_FALSE(q.push("t", 1, big.data(), big.size()));
    EXPECT_EQ(q.count(), 1u);
    EXPECT_EQ(q.dropped(), 0u);
}

TEST(Queue, PeekRefusesASmallBuffer) {
    node::MessageQueue<64> q;
    ASSERT_TRUE(q.push("topic", 5, "payload", 7));
    char t[4], p[64];
    size_t len;
    EXPECT_FALSE(q.peek(t, sizeof(t), p, sizeof(p), &len));
    EXPECT_EQ(q.count(), 1u);
}
