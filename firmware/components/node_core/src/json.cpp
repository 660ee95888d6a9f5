#undef JSMN_HEADER
#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

#include "node/json.hpp"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace node {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// jsmn finds the structure but accepts some malformed text ({"a":}, [1,], bare words): check the
// separators between tokens and the literals, so only well-formed JSON passes.
class Checker {
public:
    Checker(const char* js, const jsmntok_t* tok, int count) : js_(js), tok_(tok), count_(count) {}

    bool value(int* t, int* pos) {
        skip(pos);
        if (*t >= count_) return false;
        const jsmntok_t& k = tok_[*t];
        const int start = k.type == JSMN_STRING ? k.start - 1 : k.start;
        if (start != *pos) return false;
        switch (k.type) {
            case JSMN_STRING: *pos = k.end + 1; ++*t; return true;
            case JSMN_PRIMITIVE: if (!literal(k)) return false; *pos = k.end; ++*t; return true;
            case JSMN_OBJECT: case JSMN_ARRAY: return container(t, pos);
            default: return false;
        }
    }

private:
    void skip(int* pos) const {
        while (is_space(js_[*pos])) ++*pos;
    }
    bool expect(int* pos, char c) {
        skip(pos);
        if (js_[*pos] != c) return false;
        ++*pos;
        return true;
    }
    bool literal(const jsmntok_t& k) const {
        const int n = k.end - k.start;
        const char* s = js_ + k.start;
        if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0) ||
            (n == 4 && memcmp(s, "null", 4) == 0))
            return true;
        char tmp[40];
        if (n <= 0 || n >= static_cast<int>(sizeof(tmp))) return false;
        memcpy(tmp, s, n);
        tmp[n] = 0;
        char* end = nullptr;
        strtod(tmp, &end);
        return end == tmp + n && (tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'));
    }
    bool container(int* t, int* pos) {
        const jsmntok_t& c = tok_[*t];
        const bool object = c.type == JSMN_OBJECT;
        ++*pos;
        ++*t;
        for (int i = 0; i < c.size; ++i) {
            if (i && !expect(pos, ',')) return false;
            if (object) {
                skip(pos);
                if (*t >= count_ || tok_[*t].type != JSMN_STRING || tok_[*t].size != 1) return false;
                if (!value(t, pos) || !expect(pos, ':')) return false;
            }
            if (!value(t, pos)) return false;
        }
        return expect(pos, object ? '}' : ']') && *pos == c.end;
    }

    const char* js_;
    const jsmntok_t* tok_;
    int count_;
};

}  // namespace

bool JsonDoc::parse(const char* js, size_t len, const char** error) {
    js_ = js;
    jsmn_parser p;
    jsmn_init(&p);
    count_ = jsmn_parse(&p, js, len, toks_, kMaxJsonTokens);
    if (count_ == JSMN_ERROR_NOMEM) {
        *error = "document too large (too many values)";
    } else if (count_ == JSMN_ERROR_INVAL || count_ == JSMN_ERROR_PART) {
        *error = "not valid JSON";
    } else if (count_ < 1 || toks_[0].type != JSMN_OBJECT) {
        *error = "expected a JSON object";
    } else {
        int t = 0, pos = 0;
        Checker check(js, toks_, count_);
        size_t end = static_cast<size_t>(toks_[0].end);
        while (end < len && is_space(js[end])) ++end;
        if (!check.value(&t, &pos) || t != count_) {
            *error = "not valid JSON";
        } else if (end != len) {
            *error = "trailing data after the JSON object";
        } else {
            return true;
        }
    }
    count_ = 0;
    return false;
}

int JsonDoc::key_at(int obj, int i) const {
    if (obj < 0 || obj >= count_ || toks_[obj].type != JSMN_OBJECT) return -1;
    int seen = 0;
    for (int t = obj + 1; t < count_ && toks_[t].start < toks_[obj].end; ++t)
        if (toks_[t].parent == obj && seen++ == i) return t;
    return -1;
}

bool JsonDoc::key_is(int k, const char* key) const {
    const size_t n = strlen(key);
    return k >= 0 && static_cast<size_t>(toks_[k].end - toks_[k].start) == n &&
           memcmp(js_ + toks_[k].start, key, n) == 0;
}

void JsonDoc::key_text(int k, char* out, size_t cap) const {
    if (cap == 0) return;
    size_t n = k >= 0 ? static_cast<size_t>(toks_[k].end - toks_[k].start) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(out, js_ + toks_[k].start, n);
    out[n] = 0;
}

int JsonDoc::find(int obj, const char* key) const {
    for (int i = 0;; ++i) {
        const int k = key_at(obj, i);
        if (k < 0) return -1;
        if (key_is(k, key)) return k + 1;
    }
}

bool JsonDoc::is_number(int t) const {
    if (t < 0 || toks_[t].type != JSMN_PRIMITIVE) return false;
    const char c = js_[toks_[t].start];
    return c == '-' || (c >= '0' && c <= '9');
}

bool JsonDoc::is_bool(int t) const {
    return t >= 0 && toks_[t].type == JSMN_PRIMITIVE && (js_[toks_[t].start] == 't' || js_[toks_[t].start] == 'f');
}

bool JsonDoc::string(int t, char* out, size_t cap) const {
    if (!is_string(t) || cap == 0) return false;
    size_t n = 0;
    for (int i = toks_[t].start; i < toks_[t].end; ++i) {
        char c = js_[i];
        if (c == '\\') {
            c = js_[++i];
            if (c != '"' && c != '\\' && c != '/') return false;
        }
        if (n + 1 >= cap) return false;
        out[n++] = c;
    }
    out[n] = 0;
    return true;
}

bool JsonDoc::number(int t, double* out) const {
    if (!is_number(t)) return false;
    char tmp[40];
    const size_t n = static_cast<size_t>(toks_[t].end - toks_[t].start);
    if (n >= sizeof(tmp)) return false;
    memcpy(tmp, js_ + toks_[t].start, n);
    tmp[n] = 0;
    char* end = nullptr;
    *out = strtod(tmp, &end);
    return end == tmp + n && isfinite(*out);
}

bool JsonDoc::boolean(int t, bool* out) const {
    if (!is_bool(t)) return false;
    *out = js_[toks_[t].start] == 't';
    return true;
}

Writer& Writer::raw(const char* s, size_t n) {
    if (!ok_ || len_ + n + 1 > cap_) {
        ok_ = false;
        return *this;
    }
    memcpy(buf_ + len_, s, n);
    len_ += n;
    buf_[len_] = 0;
    return *this;
}

Writer& Writer::raw(const char* s) { return raw(s, strlen(s)); }

Writer& Writer::str(const char* s) {
    raw("\"");
    for (; *s; ++s) {
        const unsigned char c = static_cast<unsigned char>(*s);
        if (c == '"' || c == '\\') {
            const char esc[2] = {'\\', static_cast<char>(c)};
            raw(esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            raw(esc);
        } else {
            raw(s, 1);
        }
    }
    return raw("\"");
}

Writer& Writer::num(double v) {
    if (!isfinite(v)) return raw("null");
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%.6g", v);
    return raw(tmp);
}

Writer& Writer::integer(int64_t v) {
    char tmp[24];
    snprintf(tmp, sizeof(tmp), "%lld", static_cast<long long>(v));
    return raw(tmp);
}

bool copy_string(char* dst, size_t cap, const char* src) {
    const size_t n = strlen(src);
    if (n + 1 > cap) return false;
    memcpy(dst, src, n + 1);
    return true;
}

}  // namespace node
