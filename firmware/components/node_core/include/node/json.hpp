// Reading JSON documents from the network (desired properties, commands, activation replies) with
// jsmn (Debian's libjsmn-dev on the host; header-only, no heap) and writing messages into fixed
// buffers. Every refusal names the field.
#pragma once

#include <stddef.h>
#include <stdint.h>

#define JSMN_HEADER
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

#include "node/config.hpp"

namespace node {

class JsonDoc {
public:
    /// Parse a whole document whose root is an object; false with a reason otherwise.
    bool parse(const char* js, size_t len, const char** error);
    /// The value token of `key` in object `obj` (0: the root), or -1.
    int find(int obj, const char* key) const;
    bool is_object(int t) const { return t >= 0 && toks_[t].type == JSMN_OBJECT; }
    bool is_string(int t) const { return t >= 0 && toks_[t].type == JSMN_STRING; }
    bool is_number(int t) const;
    bool is_bool(int t) const;
    /// Copy a string value (escapes other than \" \\ \/ are refused); false if absent, not a string or too long.
    bool string(int t, char* out, size_t cap) const;
    bool number(int t, double* out) const;
    bool boolean(int t, bool* out) const;
    /// Keys of object `obj`, for refusing unknown ones: the i-th key's token, or -1.
    int key_at(int obj, int i) const;
    bool key_is(int key_tok, const char* key) const;
    int key_count(int obj) const { return obj >= 0 && toks_[obj].type == JSMN_OBJECT ? toks_[obj].size : 0; }
    /// Copy a key's text (for error messages), truncated to fit.
    void key_text(int key_tok, char* out, size_t cap) const;

private:
    jsmntok_t toks_[kMaxJsonTokens];
    const char* js_ = nullptr;
    int count_ = 0;
};

/// Appends to a fixed buffer; once something does not fit, `ok()` stays false.
class Writer {
public:
    Writer(char* buf, size_t cap) : buf_(buf), cap_(cap) {
        if (cap_) buf_[0] = 0;
    }
    Writer& raw(const char* s);
    Writer& raw(const char* s, size_t n);
    Writer& str(const char* s);  ///< a JSON string literal, escaped
    Writer& num(double v);       ///< %.6g (fft-filter's 6 significant digits); non-finite as null
    Writer& integer(int64_t v);
    Writer& boolean(bool v) { return raw(v ? "true" : "false"); }
    Writer& key(const char* k) { return str(k).raw(":"); }
    bool ok() const { return ok_; }
    size_t size() const { return len_; }
    const char* c_str() const { return buf_; }

private:
    char* buf_;
    size_t cap_;
    size_t len_ = 0;
    bool ok_ = true;
};

/// Bounded copy with NUL; false when `src` does not fit.
bool copy_string(char* dst, size_t cap, const char* src);

}  // namespace node
