#include <gtest/gtest.h>

#include <string>

#include "helpers.hpp"
#include "node/sha256.hpp"

namespace testing_node {
std::string sha256_hex(const std::string& data) {
    node::Sha256 sha;
    sha.update(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    uint8_t digest[32];
    char hex[65];
    sha.finish(digest);
    node::to_hex(digest, hex);
    return hex;
}
}  // namespace testing_node

using testing_node::sha256_hex;

TEST(Sha256, KnownVectors) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, ChunkedEqualsOneShot) {
    std::string data;
    for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 7));
    node::Sha256 sha;
    for (size_t at = 0; at < data.size(); at += 61)
        sha.update(reinterpret_cast<const uint8_t*>(data.data()) + at, std::min<size_t>(61, data.size() - at));
    uint8_t digest[32];
    char hex[65];
    sha.finish(digest);
    node::to_hex(digest, hex);
    EXPECT_EQ(std::string(hex), sha256_hex(data));
}
