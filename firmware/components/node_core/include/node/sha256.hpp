// SHA-256 (FIPS 180-4) for verifying a downloaded model as it streams into flash. The board may
// use mbedtls instead; this one keeps the core self-contained and is checked against hashlib.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace node {

class Sha256 {
public:
    Sha256() { reset(); }
    void reset();
    void update(const uint8_t* data, size_t len);
    void finish(uint8_t digest[32]);

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    uint64_t bits_;
    size_t fill_;
};

/// Lower-case hex of a digest into `out` (65 bytes with the NUL).
void to_hex(const uint8_t digest[32], char out[65]);

}  // namespace node
