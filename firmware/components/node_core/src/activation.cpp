#include "node/activation.hpp"

#include <stdio.h>
#include <string.h>

#include "node/json.hpp"

namespace node {

const char* activation_state_name(ActivationState s) {
    switch (s) {
        case ActivationState::kUnprovisioned: return "unprovisioned";
        case ActivationState::kRequesting: return "activating";
        case ActivationState::kBackoff: return "activating";
        case ActivationState::kActivated: return "activated";
        case ActivationState::kRefused: return "refused";
        case ActivationState::kDeactivated: return "deactivated";
    }
    return "unknown";
}

void Activation::start(const char* device_id, const char* key, const char* stored, int64_t now_ms) {
    copy_string(device_id_, sizeof(device_id_), device_id);
    copy_string(key_, sizeof(key_), key ? key : "");
    backoff_ms_ = 0;
    error_[0] = 0;
    if (stored && stored[0] && copy_string(credential_, sizeof(credential_), stored)) {
        state_ = ActivationState::kActivated;
    } else {
        credential_[0] = 0;
        state_ = ActivationState::kRequesting;
        due_ms_ = now_ms;
    }
}

bool Activation::request_due(int64_t now_ms) {
    if (state_ == ActivationState::kRequesting) return true;
    if ((state_ == ActivationState::kBackoff || state_ == ActivationState::kRefused ||
         state_ == ActivationState::kDeactivated) &&
        now_ms >= due_ms_ && key_[0]) {
        state_ = ActivationState::kRequesting;
        return true;
    }
    return false;
}

bool Activation::request_body(char* out, size_t cap) const {
    Writer w(out, cap);
    w.raw("{").key("deviceId").str(device_id_).raw(",").key("activationKey").str(key_).raw("}");
    return w.ok();
}

void Activation::wait(ActivationState s, uint32_t ms, int64_t now_ms) {
    state_ = s;
    due_ms_ = now_ms + ms;
}

ActivationState Activation::on_response(int status, const char* body, size_t len, int64_t now_ms) {
    JsonDoc doc;
    const char* why = nullptr;
    const bool parsed = doc.parse(body, len, &why);
    if (status == 200) {
        char cred[kMaxCredential];
        if (!parsed || !doc.string(doc.find(0, "credential"), cred, sizeof(cred)) || !cred[0]) {
            snprintf(error_, sizeof(error_), "activation reply: %s", parsed ? "credential: missing or too long" : why);
            on_transport_error(now_ms);  // a broken reply is retried like a lost one
            return state_;
        }
        copy_string(credential_, sizeof(credential_), cred);
        dirty_ = true;
        backoff_ms_ = 0;
        error_[0] = 0;
        state_ = ActivationState::kActivated;
        return state_;
    }
    char reason[48] = "";
    if (parsed) doc.string(doc.find(0, "error"), reason, sizeof(reason));
    if (status == 403 && strcmp(reason, "deactivated") == 0) {
        on_deactivated(now_ms);
    } else if (status == 401 || status == 403 || status == 404) {
        snprintf(error_, sizeof(error_), "activation refused (HTTP %d%s%s)", status, reason[0] ? ": " : "", reason);
        credential_[0] = 0;
        wait(ActivationState::kRefused, settings.recheck_ms, now_ms);
    } else {
        snprintf(error_, sizeof(error_), "activation endpoint answered HTTP %d", status);
        on_transport_error(now_ms);
    }
    return state_;
}

void Activation::on_transport_error(int64_t now_ms) {
    backoff_ms_ = backoff_ms_ == 0 ? settings.min_backoff_ms : backoff_ms_ * 2;
    if (backoff_ms_ > settings.max_backoff_ms) backoff_ms_ = settings.max_backoff_ms;
    if (!error_[0]) copy_string(error_, sizeof(error_), "activation endpoint unreachable");
    wait(ActivationState::kBackoff, backoff_ms_, now_ms);
}

void Activation::on_credential_refused(int64_t now_ms) {
    credential_[0] = 0;
    dirty_ = true;  // forget it in flash too
    copy_string(error_, sizeof(error_), "the hub refused the stored credential; activating again");
    backoff_ms_ = 0;
    state_ = ActivationState::kRequesting;
    due_ms_ = now_ms;
}

void Activation::on_deactivated(int64_t now_ms) {
    credential_[0] = 0;
    dirty_ = true;
    copy_string(error_, sizeof(error_), "device deactivated: not sending");
    wait(ActivationState::kDeactivated, settings.recheck_ms, now_ms);
}

}  // namespace node
