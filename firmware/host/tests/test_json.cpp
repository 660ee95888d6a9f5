#include <gtest/gtest.h>

#include <string.h>

#include <string>

#include "node/json.hpp"

namespace {
bool parse(node::JsonDoc& d, const std::string& s, const char** why) { return d.parse(s.data(), s.size(), why); }
}  // namespace

TEST(Json, ReadsStringsNumbersBooleansAndNestedObjects) {
    node::JsonDoc d;
    const char* why = nullptr;
    const std::string text = R"({"a":"x\"y","n":-1.5e2,"b":true,"o":{"k":"v"}})";  // the doc points into it
    ASSERT_TRUE(parse(d, text, &why)) << why;
    char s[16];
    double n;
    bool b;
    ASSERT_TRUE(d.string(d.find(0, "a"), s, sizeof(s)));
    EXPECT_STREQ(s, "x\"y");
    ASSERT_TRUE(d.number(d.find(0, "n"), &n));
    EXPECT_EQ(n, -150.0);
    ASSERT_TRUE(d.boolean(d.find(0, "b"), &b));
    EXPECT_TRUE(b);
    const int o = d.find(0, "o");
    ASSERT_TRUE(d.is_object(o));
    ASSERT_TRUE(d.string(d.find(o, "k"), s, sizeof(s)));
    EXPECT_STREQ(s, "v");
    EXPECT_EQ(d.find(0, "k"), -1);  // only direct children
    EXPECT_EQ(d.key_count(0), 4);
}

TEST(Json, MalformedDocumentsAreRefusedWithAReason) {
    const char* cases[] = {"", "{", "[1,2]", "{\"a\":}", "{\"a\":1} trailing", "{\"a\":tru}", "\"str\"", "{\"a\":1,}"};
    for (const char* c : cases) {
        node::JsonDoc d;
        const char* why = nullptr;
        EXPECT_FALSE(parse(d, c, &why)) << c;
        EXPECT_NE(why, nullptr) << c;
    }
}

TEST(Json, TooManyValuesIsRefused) {
    std::string big = "{\"a\":[";
    for (int i = 0; i < 200; ++i) big += (i ? ",1" : "1");
    big += "]}";
    node::JsonDoc d;
    const char* why = nullptr;
    EXPECT_FALSE(parse(d, big, &why));
    EXPECT_STREQ(why, "document too large (too many values)");
}

TEST(Json, StringsThatDoNotFitOrUseUnknownEscapesAreRefused) {
    node::JsonDoc d;
    const char* why = nullptr;
    const std::string text = R"({"a":"0123456789","u":"\u0041"})";
    ASSERT_TRUE(parse(d, text, &why));
    char s[8];
    EXPECT_FALSE(d.string(d.find(0, "a"), s, sizeof(s)));
    EXPECT_FALSE(d.string(d.find(0, "u"), s, sizeof(s)));
    double n;
    EXPECT_FALSE(d.number(d.find(0, "a"), &n));
}

TEST(Writer, EscapesAndStopsWhenFull) {
    char buf[64];
    node::Writer w(buf, sizeof(buf));
    w.raw("{").key("k").str("a\"b\n").raw(",").key("n").num(0.1234567).raw(",").key("i").integer(-42).raw("}");
    ASSERT_TRUE(w.ok());
    EXPECT_STREQ(buf, R"({"k":"a\"b\u000a","n":0.123457,"i":-42})");
    char small[8];
    node::Writer s(small, sizeof(small));
    s.raw("0123456789");
    EXPECT_FALSE(s.ok());
}
