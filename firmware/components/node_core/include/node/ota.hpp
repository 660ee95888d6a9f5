// Over-the-air model updates into two flash slots (A/B).
//
//   Idle --desired model (url, version, sha256, size)--> Downloading (inactive slot erased)
//   Downloading --chunks, in order--> Staged (size reached, sha256 matches) | Failed (mismatch, too long)
//   Downloading --3 download errors--> Failed
//   Staged --window boundary: load OK--> Idle, the new slot active and persisted
//   Staged --window boundary: load fails--> Failed, the previous model reloaded and still active
//
// A failed update never touches the running model. At boot the persisted active slot is loaded;
// if it does not load, the other slot (the previous model) is.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node/config.hpp"
#include "node/json.hpp"
#include "node/model.hpp"
#include "node/sha256.hpp"

namespace node {

struct SlotInfo {
    bool valid = false;
    uint32_t size = 0;
    char version[kMaxVersion] = "";
    char sha256[65] = "";
};

/// What flash remembers: both slots and which one runs.
struct ModelMeta {
    SlotInfo slots[2];
    int active = 0;
};

/// Flash: two model partitions plus a small record (NVS on the board, files on the host).
class ModelStore {
public:
    virtual bool erase(int slot) = 0;
    virtual bool write(int slot, size_t offset, const uint8_t* data, size_t len) = 0;
    /// The slot's bytes, readable in place (esp_partition_mmap on the board).
    virtual const uint8_t* map(int slot, size_t size) = 0;
    virtual bool load_meta(ModelMeta* meta) = 0;
    virtual bool save_meta(const ModelMeta& meta) = 0;

protected:
    ~ModelStore() = default;
};

enum class OtaState : uint8_t { kIdle, kDownloading, kStaged, kFailed };
const char* ota_state_name(OtaState s);

struct ModelRequest {
    char url[kMaxUrl] = "";
    char version[kMaxVersion] = "";
    char sha256[65] = "";
    uint32_t size = 0;
};

/// Read `{"url", "version", "sha256", "size"}` at token `obj`; false with a reason naming the field.
bool parse_model_request(const JsonDoc& doc, int obj, ModelRequest* out, char* error, size_t cap);

class Ota {
public:
    Ota(ModelStore& store, Inference& runtime) : store_(store), runtime_(runtime) {}

    /// Load the persisted active model (or the other slot if it fails); false when neither loads.
    bool boot(ModelIo* io);
    /// Install a model once: into slot 0, active (a factory image or the emulated node's first run).
    bool install_factory(const uint8_t* model, size_t size, const char* version, ModelIo* io);

    /// A desired model: starts a download unless that version and hash already run. False: refused.
    bool request(const ModelRequest& req, char* error, size_t cap);
    /// Next range to fetch: offset and up to `max_len` bytes; false when not downloading.
    bool next_chunk(uint32_t* offset, uint32_t* len, uint32_t max_len = 4096) const;
    bool on_chunk(uint32_t offset, const uint8_t* data, size_t len);
    void on_download_error(const char* why);
    /// At a window boundary: switch to a staged model, or fall back. True when the model changed.
    bool switch_if_staged(ModelIo* io);

    OtaState state() const { return state_; }
    const SlotInfo& active() const { return meta_.slots[meta_.active]; }
    const ModelRequest& pending() const { return req_; }
    uint32_t received() const { return offset_; }
    const char* last_error() const { return error_; }

private:
    bool load_slot(int slot, ModelIo* io);
    void fail(const char* fmt, const char* a = "", const char* b = "");

    ModelStore& store_;
    Inference& runtime_;
    ModelMeta meta_;
    OtaState state_ = OtaState::kIdle;
    ModelRequest req_;
    uint32_t offset_ = 0;
    int errors_ = 0;
    Sha256 sha_;
    char error_[200] = "";
};

/// Whether a runtime's view of a model fits the node: kModelInputs int8 inputs, one int8 score.
bool model_fits(const ModelIo& io, char* error, size_t cap);

}  // namespace node
