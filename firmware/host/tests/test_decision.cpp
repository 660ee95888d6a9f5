#include <gtest/gtest.h>

#include <math.h>

#include "node/decision.hpp"

TEST(Decision, TripsAfterKConsecutiveWindowsAboveThreshold) {
    node::Decision d;  // threshold 0.8, K = 3
    EXPECT_FALSE(d.update(0.9f));
    EXPECT_FALSE(d.update(0.95f));
    EXPECT_TRUE(d.update(0.85f));
    EXPECT_TRUE(d.fault());
}

TEST(Decision, AnInterruptedStreakStartsOver) {
    node::Decision d;
    d.update(0.9f);
    d.update(0.9f);
    d.update(0.5f);
    d.update(0.9f);
    EXPECT_FALSE(d.update(0.9f));
    EXPECT_FALSE(d.fault());
    EXPECT_TRUE(d.update(0.9f));
}

TEST(Decision, ClearsOnlyBelowTheReleaseLevel) {
    node::Decision d;
    for (int i = 0; i < 3; ++i) d.update(1.0f);
    ASSERT_TRUE(d.fault());
    for (int i = 0; i < 10; ++i) EXPECT_FALSE(d.update(0.7f));  // between release and threshold: hysteresis
    EXPECT_TRUE(d.fault());
    for (int i = 0; i < 4; ++i) EXPECT_FALSE(d.update(0.2f));
    EXPECT_TRUE(d.update(0.2f));  // the 5th window below 0.5
    EXPECT_FALSE(d.fault());
}

TEST(Decision, NanBreaksAStreakAndChangesNothing) {
    node::Decision d;
    d.update(0.9f);
    d.update(0.9f);
    EXPECT_FALSE(d.update(NAN));
    EXPECT_EQ(d.streak(), 0);
    EXPECT_FALSE(d.fault());
}
