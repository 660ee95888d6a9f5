#include "node/ota.hpp"

#include <stdio.h>
#include <string.h>

namespace node {

const char* ota_state_name(OtaState s) {
    switch (s) {
        case OtaState::kIdle: return "idle";
        case OtaState::kDownloading: return "downloading";
        case OtaState::kStaged: return "staged";
        case OtaState::kFailed: return "failed";
    }
    return "unknown";
}

namespace {
bool is_token(const char* s) {
    for (; *s; ++s)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '.' ||
              *s == '_' || *s == '-'))
            return false;
    return true;
}

bool is_hex64(const char* s) {
    if (strlen(s) != 64) return false;
    for (; *s; ++s)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}
}  // namespace

bool parse_model_request(const JsonDoc& doc, int obj, ModelRequest* out, char* error, size_t cap) {
    if (!doc.is_object(obj)) {
        snprintf(error, cap, "model: expected an object with url, version, sha256 and size");
        return false;
    }
    for (int i = 0; i < doc.key_count(obj); ++i) {
        const int k = doc.key_at(obj, i);
        if (!doc.key_is(k, "url") && !doc.key_is(k, "version") && !doc.key_is(k, "sha256") && !doc.key_is(k, "size")) {
            char name[40];
            doc.key_text(k, name, sizeof(name));
            snprintf(error, cap, "model.%s: unknown field (known: sha256, size, url, version)", name);
            return false;
        }
    }
    if (!doc.string(doc.find(obj, "url"), out->url, sizeof(out->url)) ||
        (strncmp(out->url, "http://", 7) != 0 && strncmp(out->url, "https://", 8) != 0)) {
        snprintf(error, cap, "model.url: expected an http(s) URL of at most %d characters", int(kMaxUrl - 1));
        return false;
    }
    if (!doc.string(doc.find(obj, "version"), out->version, sizeof(out->version)) || !out->version[0] ||
        !is_token(out->version)) {
        snprintf(error, cap, "model.version: expected 1 to %d letters, digits, '.', '_' or '-'", int(kMaxVersion - 1));
        return false;
    }
    if (!doc.string(doc.find(obj, "sha256"), out->sha256, sizeof(out->sha256)) || !is_hex64(out->sha256)) {
        snprintf(error, cap, "model.sha256: expected 64 lower-case hex digits");
        return false;
    }
    double size = 0;
    if (!doc.number(doc.find(obj, "size"), &size) || size < 1 || size > kMaxModelBytes || size != static_cast<uint32_t>(size)) {
        snprintf(error, cap, "model.size: expected an integer in [1, %d] (the model slot)", int(kMaxModelBytes));
        return false;
    }
    out->size = static_cast<uint32_t>(size);
    return true;
}

bool model_fits(const ModelIo& io, char* error, size_t cap) {
    if (io.inputs != kModelInputs || io.outputs != 1) {
        snprintf(error, cap, "model has %d inputs and %d outputs; the node needs %d and 1", io.inputs, io.outputs,
                 kModelInputs);
        return false;
    }
    if (io.input.scale <= 0 || io.output.scale <= 0) {
        snprintf(error, cap, "model is not int8-quantised (no scale on its input or output)");
        return false;
    }
    return true;
}

void Ota::fail(const char* fmt, const char* a, const char* b) {
    snprintf(error_, sizeof(error_), fmt, a, b);
    state_ = OtaState::kFailed;
}

bool Ota::load_slot(int slot, ModelIo* io) {
    const SlotInfo& s = meta_.slots[slot];
    if (!s.valid) return false;
    const uint8_t* bytes = store_.map(slot, s.size);
    if (!bytes || !runtime_.load(bytes, s.size, io)) return false;
    char why[96];
    return model_fits(*io, why, sizeof(why));
}

bool Ota::boot(ModelIo* io) {
    if (!store_.load_meta(&meta_)) meta_ = ModelMeta();
    if (meta_.active != 0 && meta_.active != 1) meta_.active = 0;
    if (load_slot(meta_.active, io)) return true;
    const int other = 1 - meta_.active;
    if (load_slot(other, io)) {
        fail("model %s in the active slot does not load; running the previous one", meta_.slots[meta_.active].version);
        meta_.active = other;
        store_.save_meta(meta_);
        return true;
    }
    return false;
}

bool Ota::install_factory(const uint8_t* model, size_t size, const char* version, ModelIo* io) {
    if (size > kMaxModelBytes || !store_.erase(0) || !store_.write(0, 0, model, size)) return false;
    SlotInfo& s = meta_.slots[0];
    s.valid = true;
    s.size = static_cast<uint32_t>(size);
    copy_string(s.version, sizeof(s.version), version);
    uint8_t digest[32];
    Sha256 sha;
    sha.update(model, size);
    sha.finish(digest);
    to_hex(digest, s.sha256);
    meta_.slots[1] = SlotInfo();
    meta_.active = 0;
    return store_.save_meta(meta_) && load_slot(0, io);
}

bool Ota::request(const ModelRequest& req, char* error, size_t cap) {
    const SlotInfo& cur = active();
    if (strcmp(cur.sha256, req.sha256) == 0 && strcmp(cur.version, req.version) == 0) return true;  // running it
    if (state_ == OtaState::kDownloading && strcmp(req_.sha256, req.sha256) == 0) return true;    // under way
    const int target = 1 - meta_.active;
    if (!store_.erase(target)) {
        snprintf(error, cap, "model: could not erase the inactive slot");
        return false;
    }
    meta_.slots[target].valid = false;
    req_ = req;
    offset_ = 0;
    errors_ = 0;
    sha_.reset();
    error_[0] = 0;
    state_ = OtaState::kDownloading;
    return true;
}

bool Ota::next_chunk(uint32_t* offset, uint32_t* len, uint32_t max_len) const {
    if (state_ != OtaState::kDownloading) return false;
    *offset = offset_;
    const uint32_t left = req_.size - offset_;
    *len = left < max_len ? left : max_len;
    return true;
}

bool Ota::on_chunk(uint32_t offset, const uint8_t* data, size_t len) {
    if (state_ != OtaState::kDownloading || offset != offset_) return false;
    if (len > req_.size - offset_) {
        fail("model %s: the download is longer than its announced size", req_.version);
        return false;
    }
    const int target = 1 - meta_.active;
    if (!store_.write(target, offset_, data, len)) {
        on_download_error("flash write failed");
        return false;
    }
    sha_.update(data, len);
    offset_ += static_cast<uint32_t>(len);
    if (offset_ < req_.size) return true;
    uint8_t digest[32];
    char got[65];
    sha_.finish(digest);
    to_hex(digest, got);
    if (strcmp(got, req_.sha256) != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "model %s refused: sha256 %s does not match the announced one", req_.version, got);
        fail("%s", msg);
        return false;
    }
    SlotInfo& s = meta_.slots[target];
    s.valid = true;
    s.size = req_.size;
    copy_string(s.version, sizeof(s.version), req_.version);
    copy_string(s.sha256, sizeof(s.sha256), req_.sha256);
    state_ = OtaState::kStaged;
    return true;
}

void Ota::on_download_error(const char* why) {
    if (state_ != OtaState::kDownloading) return;
    if (++errors_ >= 3) fail("model %s: download failed (%s)", req_.version, why);
}

bool Ota::switch_if_staged(ModelIo* io) {
    if (state_ != OtaState::kStaged) return false;
    const int previous = meta_.active, target = 1 - previous;
    ModelIo next;
    if (load_slot(target, &next)) {
        meta_.active = target;
        store_.save_meta(meta_);
        *io = next;
        state_ = OtaState::kIdle;
        return true;
    }
    meta_.slots[target].valid = false;
    char msg[120];
    snprintf(msg, sizeof(msg), "model %s failed to load", req_.version);
    fail("%s; running %s", msg, meta_.slots[previous].version);
    load_slot(previous, io);  // the runtime may have dropped it while trying the new one
    return false;
}

}  // namespace node
