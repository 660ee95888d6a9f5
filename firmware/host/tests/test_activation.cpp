#include <gtest/gtest.h>

#include <string.h>

#include <string>

#include "node/activation.hpp"

using node::ActivationState;

namespace {
ActivationState reply(node::Activation& a, int status, const std::string& body, int64_t now = 0) {
    return a.on_response(status, body.data(), body.size(), now);
}
}  // namespace

TEST(Activation, FirstBootRequestsThenStoresTheCredential) {
    node::Activation a;
    a.start("node-1", "key-123", "", 0);
    EXPECT_EQ(a.state(), ActivationState::kRequesting);
    EXPECT_FALSE(a.may_send());
    EXPECT_TRUE(a.request_due(0));
    char body[128];
    ASSERT_TRUE(a.request_body(body, sizeof(body)));
    EXPECT_STREQ(body, R"({"deviceId":"node-1","activationKey":"key-123"})");
    EXPECT_EQ(reply(a, 200, R"({"credential":"s3cret","hub":"127.0.0.1"})"), ActivationState::kActivated);
    EXPECT_TRUE(a.may_send());
    EXPECT_STREQ(a.credential(), "s3cret");
    EXPECT_TRUE(a.credential_dirty());
    a.stored();
    EXPECT_FALSE(a.credential_dirty());
}

TEST(Activation, AStoredCredentialNeedsNoRequest) {
    node::Activation a;
    a.start("node-1", "key", "stored", 0);
    EXPECT_EQ(a.state(), ActivationState::kActivated);
    EXPECT_FALSE(a.request_due(0));
}

TEST(Activation, UnreachableEndpointBacksOffDoubling) {
    node::Activation a;
    a.settings.min_backoff_ms = 1000;
    a.settings.max_backoff_ms = 3000;
    a.start("n", "k", nullptr, 0);
    ASSERT_TRUE(a.request_due(0));
    a.on_transport_error(0);
    EXPECT_EQ(a.state(), ActivationState::kBackoff);
    EXPECT_FALSE(a.request_due(999));
    ASSERT_TRUE(a.request_due(1000));
    a.on_transport_error(1000);  // 2 s
    EXPECT_FALSE(a.request_due(2999));
    ASSERT_TRUE(a.request_due(3000));
    a.on_transport_error(3000);  // capped at 3 s
    EXPECT_FALSE(a.request_due(5999));
    EXPECT_TRUE(a.request_due(6000));
    EXPECT_EQ(reply(a, 503, "{}"), ActivationState::kBackoff);  // 5xx: retried like a lost request
}

TEST(Activation, MalformedRepliesAreRetriedNotTrusted) {
    node::Activation a;
    a.start("n", "k", nullptr, 0);
    EXPECT_EQ(reply(a, 200, "not json"), ActivationState::kBackoff);
    EXPECT_EQ(reply(a, 200, R"({"credential":""})"), ActivationState::kBackoff);
    EXPECT_EQ(reply(a, 200, R"({"credential":42})"), ActivationState::kBackoff);
    EXPECT_FALSE(a.may_send());
    EXPECT_NE(strstr(a.last_error(), "credential"), nullptr);
}

TEST(Activation, WrongKeyIsRefusedAndDeactivatedStopsSending) {
    node::Activation a;
    a.settings.recheck_ms = 60000;
    a.start("n", "bad", nullptr, 0);
    EXPECT_EQ(reply(a, 401, R"({"error":"unknown device or key"})"), ActivationState::kRefused);
    EXPECT_FALSE(a.request_due(59999));
    EXPECT_TRUE(a.request_due(60000));
    EXPECT_EQ(reply(a, 403, R"({"error":"deactivated"})", 60000), ActivationState::kDeactivated);
    EXPECT_FALSE(a.may_send());
    EXPECT_STREQ(a.last_error(), "device deactivated: not sending");
    EXPECT_STREQ(node::activation_state_name(a.state()), "deactivated");
}

TEST(Activation, ABrokerThatRefusesTheCredentialLeadsToReactivation) {
    node::Activation a;
    a.start("n", "k", "old", 0);
    a.on_credential_refused(5);
    EXPECT_EQ(a.state(), ActivationState::kRequesting);
    EXPECT_STREQ(a.credential(), "");
    EXPECT_TRUE(a.credential_dirty());  // forgotten in flash too
    EXPECT_EQ(reply(a, 200, R"({"credential":"new"})"), ActivationState::kActivated);
}
