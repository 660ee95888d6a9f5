#include <gtest/gtest.h>

#include "node/servo.hpp"

TEST(Servo, AngleToPulseAndDuty) {
    node::ServoSettings s;  // 50 Hz, 500..2500 us, 14 bits: 16384 counts per 20 ms
    EXPECT_EQ(node::servo_pulse_us(s, 0), 500u);
    EXPECT_EQ(node::servo_pulse_us(s, 90), 1500u);
    EXPECT_EQ(node::servo_pulse_us(s, 180), 2500u);
    EXPECT_EQ(node::servo_duty(s, 0), 410u);    // 500 / 20000 * 16384 = 409.6
    EXPECT_EQ(node::servo_duty(s, 90), 1229u);  // 1228.8
    EXPECT_EQ(node::servo_duty(s, 180), 2048u);
}

TEST(Servo, OutOfRangeAnglesAreClamped) {
    node::ServoSettings s;
    EXPECT_EQ(node::servo_duty(s, -30), node::servo_duty(s, 0));
    EXPECT_EQ(node::servo_duty(s, 720), node::servo_duty(s, 180));
    EXPECT_EQ(node::servo_pulse_us(s, 0.0f / 0.0f), 500u);
}

TEST(Valve, AutoFollowsTheFaultAndCommandsOverride) {
    node::Valve v;
    EXPECT_FALSE(v.open());
    EXPECT_TRUE(v.update(true));
    EXPECT_TRUE(v.open());
    EXPECT_EQ(v.duty(), node::servo_duty(v.settings, 90));
    EXPECT_TRUE(v.set_mode(node::ValveMode::kForceClosed, true));  // the gateway overrides
    EXPECT_FALSE(v.open());
    EXPECT_FALSE(v.update(true));
    EXPECT_TRUE(v.set_mode(node::ValveMode::kAuto, true));
    EXPECT_TRUE(v.open());
    EXPECT_TRUE(v.set_mode(node::ValveMode::kForceClosed, true));
    EXPECT_TRUE(v.set_mode(node::ValveMode::kForceOpen, false));
    EXPECT_FALSE(v.update(false));
    EXPECT_TRUE(v.open());
}
