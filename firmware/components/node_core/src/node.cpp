#include "node/node.hpp"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "node/json.hpp"

namespace node {

Node::Node(RealFft& fft, Inference& runtime, ModelStore& store)
    : features_(fft), runtime_(runtime), ota_(store, runtime) {}

bool Node::init(const NodeConfig& config, int64_t now_ms) {
    (void)now_ms;
    config_ = config;
    model_ok_ = ota_.boot(&io_);
    return model_ok_;
}

bool Node::topic(const char* type, uint32_t seq, char* out, size_t cap) const {
    // IoT Hub's leaf telemetry topic; properties url-encoded ('/' of the content type as %2F).
    const int n = snprintf(out, cap, "devices/%s/messages/events/$.ct=application%%2Fjson&$.ce=utf-8&$.mid=%s-%lu-%lu&type=%s",
                           config_.device_id, config_.device_id, static_cast<unsigned long>(config_.boot),
                           static_cast<unsigned long>(seq), type);
    return n > 0 && static_cast<size_t>(n) < cap;
}

void Node::enqueue(const char* type, const char* body, size_t len) {
    if (!activation_.may_send()) return;  // deactivated or not yet activated: nothing goes out
    if (!topic(type, ++seq_, topic_buf_, sizeof(topic_buf_))) return;
    queue_.push(topic_buf_, strlen(topic_buf_), body, len);
}

void Node::queue_event(const char* type, const char* json_object_body) {
    enqueue(type, json_object_body, strlen(json_object_body));
}

bool Node::process_window(const float* const channels[kChannels], int64_t timestamp_ms, WindowResult* r) {
    for (int c = 0; c < kChannels; ++c)
        if (!features_.compute(channels[c], config_.sample_rate_hz, &r->channels[c])) return false;
    ++windows_;
    r->score = NAN;
    r->raw_score = 0;
    if (model_ok_ && model_inputs(spec, r->channels, r->inputs)) {
        for (int i = 0; i < kModelInputs; ++i) r->quantized[i] = quantize(r->inputs[i], io_.input);
        if (runtime_.invoke(r->quantized, &r->raw_score)) r->score = dequantize(r->raw_score, io_.output);
    }
    const bool fault_changed = decision_.update(r->score);
    r->fault = decision_.fault();
    r->valve_changed = valve_.update(r->fault);
    r->valve_open = valve_.open();
    r->duty = valve_.duty();
    const size_t before = queue_.count() + queue_.dropped();
    if (encode_telemetry(*r, timestamp_ms, message_buf_, sizeof(message_buf_)))
        enqueue("telemetry", message_buf_, strlen(message_buf_));
    if (r->valve_changed || fault_changed) {
        Writer w(message_buf_, sizeof(message_buf_));
        w.raw("{").key("deviceID").str(config_.device_id).raw(",").key("event").str("valve");
        w.raw(",").key("valve").str(r->valve_open ? "open" : "closed").raw(",").key("mode").str(valve_mode_name(valve_.mode()));
        w.raw(",").key("fault").boolean(r->fault).raw(",").key("score").num(r->score);
        w.raw(",").key("timestamp").num(timestamp_ms / 1000.0).raw("}");
        if (w.ok()) enqueue("valve", message_buf_, w.size());
    }
    r->queued = queue_.count() + queue_.dropped() > before;
    // A staged model is switched in only here, between two windows.
    ModelIo io;
    if (ota_.switch_if_staged(&io)) {
        io_ = io;
        model_ok_ = true;
        Writer w(message_buf_, sizeof(message_buf_));
        w.raw("{").key("event").str("model").raw(",").key("version").str(ota_.active().version).raw(",");
        w.key("sha256").str(ota_.active().sha256).raw("}");
        if (w.ok()) enqueue("model", message_buf_, w.size());
    } else if (ota_.state() == OtaState::kFailed && ota_.last_error()[0] && strcmp(last_error_, ota_.last_error()) != 0) {
        copy_string(last_error_, sizeof(last_error_), ota_.last_error());
        Writer w(message_buf_, sizeof(message_buf_));
        w.raw("{").key("event").str("modelRefused").raw(",").key("error").str(last_error_).raw(",");
        w.key("running").str(ota_.active().version).raw("}");
        if (w.ok()) enqueue("model", message_buf_, w.size());
    }
    return true;
}

bool Node::encode_telemetry(const WindowResult& r, int64_t timestamp_ms, char* out, size_t cap) const {
    // The gateway fft-filter's features message, plus the node's own verdict.
    Writer w(out, cap);
    const float fs = config_.sample_rate_hz;
    w.raw("{").key("deviceID").str(config_.device_id).raw(",").key("sequence").integer(windows_);
    w.raw(",").key("timestamp").num(timestamp_ms / 1000.0).raw(",").key("sampleRateHz").num(fs);
    w.raw(",").key("windowSize").integer(kWindowSize).raw(",").key("window").str("hann");
    w.raw(",").key("binHz").num(fs / kWindowSize);
    for (int c = 0; c < kChannels; ++c)
        w.raw(",").key(kChannelNames[c]).num(channel_summary(static_cast<Channel>(c), r.channels[c]));
    w.raw(",").key("fft_data").raw("{");
    for (int c = 0; c < kChannels; ++c) {
        const ChannelFeatures& f = r.channels[c];
        if (c) w.raw(",");
        w.key(kChannelNames[c]).raw("{").key("mean").num(f.mean).raw(",").key("rms").num(f.rms);
        w.raw(",").key("std").num(f.std).raw(",").key("crest").num(f.crest).raw(",").key("kurtosis").num(f.kurtosis);
        w.raw(",").key("peaks").raw("[");
        for (int p = 0; p < f.peak_count; ++p) {
            w.raw(p ? ",[" : "[").num(f.peaks[p].hz).raw(",").num(f.peaks[p].amplitude).raw("]");
        }
        w.raw("],").key("bands").raw("{");
        for (int b = 0; b < f.band_count; ++b) {
            char name[32];
            snprintf(name, sizeof(name), "%g-%g", static_cast<double>(f.band_lo_hz[b]), static_cast<double>(f.band_hi_hz[b]));
            if (b) w.raw(",");
            w.key(name).num(f.bands[b]);
        }
        w.raw("}}");
    }
    w.raw("},").key("score").num(r.score).raw(",").key("fault").boolean(r.fault);
    w.raw(",").key("valve").str(r.valve_open ? "open" : "closed");
    w.raw(",").key("modelVersion").str(model_ok_ ? ota_.active().version : "").raw("}");
    return w.ok();
}

bool Node::handle_desired(const char* json, size_t len, char* error, size_t cap) {
    JsonDoc doc;
    const char* why = nullptr;
    if (!doc.parse(json, len, &why)) {
        snprintf(error, cap, "desired properties: %s", why);
        return false;
    }
    // Validate everything first: a refused document changes nothing.
    DecisionSettings ds = decision_.settings;
    ModelRequest req;
    bool has_model = false;
    for (int i = 0; i < doc.key_count(0); ++i) {
        const int k = doc.key_at(0, i);
        const int v = k + 1;
        char name[40];
        doc.key_text(k, name, sizeof(name));
        double num = 0;
        if (name[0] == '$') continue;  // $version and friends
        if (doc.key_is(k, "model")) {
            if (!parse_model_request(doc, v, &req, error, cap)) return false;
            has_model = true;
        } else if (doc.key_is(k, "threshold") || doc.key_is(k, "release")) {
            if (!doc.number(v, &num) || num < 0 || num > 1) {
                snprintf(error, cap, "%s: expected a number in [0, 1]", name);
                return false;
            }
            (doc.key_is(k, "threshold") ? ds.threshold : ds.release) = static_cast<float>(num);
        } else if (doc.key_is(k, "tripWindows") || doc.key_is(k, "clearWindows")) {
            if (!doc.number(v, &num) || num < 1 || num > 1000 || num != static_cast<int>(num)) {
                snprintf(error, cap, "%s: expected an integer in [1, 1000]", name);
                return false;
            }
            (doc.key_is(k, "tripWindows") ? ds.trip_windows : ds.clear_windows) = static_cast<int>(num);
        } else {
            snprintf(error, cap, "%s: unknown desired property (known: clearWindows, model, release, threshold, tripWindows)",
                     name);
            return false;
        }
    }
    if (ds.release > ds.threshold) {
        snprintf(error, cap, "release: must not be above threshold (%g > %g)", double(ds.release), double(ds.threshold));
        return false;
    }
    if (has_model && !ota_.request(req, error, cap)) return false;
    decision_.settings = ds;
    return true;
}

int Node::handle_method(const char* name, const char* json, size_t len, char* response, size_t cap) {
    JsonDoc doc;
    const char* why = nullptr;
    Writer w(response, cap);
    if (!doc.parse(json, len, &why)) {
        w.raw("{").key("error").str(why).raw("}");
        return 400;
    }
    if (strcmp(name, "valve") == 0) {
        char pos[16];
        ValveMode mode;
        if (!doc.string(doc.find(0, "position"), pos, sizeof(pos))) {
            w.raw("{").key("error").str("position: expected \"open\", \"closed\" or \"auto\"").raw("}");
            return 400;
        }
        if (strcmp(pos, "open") == 0) {
            mode = ValveMode::kForceOpen;
        } else if (strcmp(pos, "closed") == 0) {
            mode = ValveMode::kForceClosed;
        } else if (strcmp(pos, "auto") == 0) {
            mode = ValveMode::kAuto;
        } else {
            w.raw("{").key("error").str("position: expected \"open\", \"closed\" or \"auto\"").raw("}");
            return 400;
        }
        if (valve_.set_mode(mode, decision_.fault())) {
            char body[160];
            Writer e(body, sizeof(body));
            e.raw("{").key("deviceID").str(config_.device_id).raw(",").key("event").str("valve").raw(",");
            e.key("valve").str(valve_.open() ? "open" : "closed").raw(",").key("mode").str(valve_mode_name(mode)).raw("}");
            if (e.ok()) queue_event("valve", body);
        }
        w.raw("{").key("valve").str(valve_.open() ? "open" : "closed").raw(",").key("mode").str(valve_mode_name(mode));
        w.raw(",").key("duty").integer(valve_.duty()).raw("}");
        return 200;
    }
    if (strcmp(name, "deactivate") == 0) {
        activation_.on_deactivated(0);
        queue_.clear();
        w.raw("{").key("activation").str(activation_state_name(activation_.state())).raw("}");
        return 200;
    }
    w.raw("{").key("error").str("unknown method (known: deactivate, valve)").raw("}");
    return 404;
}

bool Node::reported(char* out, size_t cap) const {
    Writer w(out, cap);
    const SlotInfo& m = ota_.active();
    w.raw("{").key("firmware").str(kFirmwareVersion).raw(",").key("model").raw("{");
    w.key("version").str(model_ok_ ? m.version : "").raw(",").key("sha256").str(model_ok_ ? m.sha256 : "");
    w.raw(",").key("status").str(ota_state_name(ota_.state())).raw(",").key("lastError");
    if (ota_.last_error()[0]) w.str(ota_.last_error()); else w.raw("null");
    w.raw(",").key("arenaBytes").integer(static_cast<int64_t>(io_.arena_used));
    if (ota_.state() == OtaState::kDownloading || ota_.state() == OtaState::kStaged) {
        w.raw(",").key("pending").raw("{").key("version").str(ota_.pending().version).raw(",");
        w.key("received").integer(ota_.received()).raw(",").key("size").integer(ota_.pending().size).raw("}");
    }
    w.raw("},");
    w.key("activation").str(activation_state_name(activation_.state())).raw(",");
    w.key("valve").raw("{").key("position").str(valve_.open() ? "open" : "closed").raw(",");
    w.key("mode").str(valve_mode_name(valve_.mode())).raw(",").key("duty").integer(valve_.duty()).raw("},");
    w.key("decision").raw("{").key("threshold").num(decision_.settings.threshold).raw(",");
    w.key("release").num(decision_.settings.release).raw(",").key("tripWindows").integer(decision_.settings.trip_windows);
    w.raw(",").key("clearWindows").integer(decision_.settings.clear_windows).raw(",").key("fault").boolean(decision_.fault());
    w.raw("},").key("queue").raw("{").key("depth").integer(static_cast<int64_t>(queue_.count())).raw(",");
    w.key("bytes").integer(static_cast<int64_t>(queue_.bytes())).raw(",").key("dropped").integer(queue_.dropped());
    w.raw("},").key("windows").integer(windows_).raw("}");
    return w.ok();
}

}  // namespace node
