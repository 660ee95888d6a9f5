// First-boot activation: present the device id and activation key to an activation endpoint (a
// parameter: the fleet's activation API, or the hub's when there is no fleet yet), store the device
// credential it returns, and stop sending once the device is deactivated.
//
//   Unprovisioned --start--> Requesting --200 + credential--> Activated
//        Requesting --transport error / 5xx--> Backoff --due--> Requesting (1 s .. 5 min, doubling)
//        Requesting --403 "deactivated"--> Deactivated        (re-checks every `recheck_ms`)
//        Requesting --401/404 (unknown id or key)--> Refused  (re-checks every `recheck_ms`)
//        Activated --broker refuses the credential--> Requesting (the credential is forgotten)
//        Activated --403 "deactivated" or a `deactivated` command--> Deactivated
//
// The board does the I/O (HTTPS POST, NVS); this class decides what to do next.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node/config.hpp"

namespace node {

enum class ActivationState : uint8_t { kUnprovisioned, kRequesting, kBackoff, kActivated, kRefused, kDeactivated };

const char* activation_state_name(ActivationState s);

struct ActivationSettings {
    char endpoint[kMaxUrl] = "";  ///< e.g. http://gateway:8443/api/v1/activate (fleet) or the hub's
    uint32_t min_backoff_ms = 1000;
    uint32_t max_backoff_ms = 300000;
    uint32_t recheck_ms = 3600000;
};

class Activation {
public:
    /// Boot: with a stored credential the node is activated at once.
    void start(const char* device_id, const char* activation_key, const char* stored_credential, int64_t now_ms);
    /// Whether a request should be sent now (Requesting, or a backoff/recheck that is due).
    bool request_due(int64_t now_ms);
    /// The JSON body of the request: {"deviceId": ..., "activationKey": ...}; false if it does not fit.
    bool request_body(char* out, size_t cap) const;
    /// The endpoint's answer. `body` is the response body (JSON); returns the new state.
    ActivationState on_response(int http_status, const char* body, size_t len, int64_t now_ms);
    /// The request could not be sent or had no answer.
    void on_transport_error(int64_t now_ms);
    /// The broker refused the stored credential (CONNACK not authorised).
    void on_credential_refused(int64_t now_ms);
    /// The gateway said the device was deactivated.
    void on_deactivated(int64_t now_ms);

    ActivationState state() const { return state_; }
    bool may_send() const { return state_ == ActivationState::kActivated; }
    const char* credential() const { return credential_; }
    /// Set when a new credential arrived and the board must persist it (then call `stored()`).
    bool credential_dirty() const { return dirty_; }
    void stored() { dirty_ = false; }
    const char* last_error() const { return error_; }
    ActivationSettings settings;

private:
    void wait(ActivationState s, uint32_t ms, int64_t now_ms);
    ActivationState state_ = ActivationState::kUnprovisioned;
    char device_id_[kMaxDeviceId] = "";
    char key_[kMaxCredential] = "";
    char credential_[kMaxCredential] = "";
    char error_[96] = "";
    bool dirty_ = false;
    uint32_t backoff_ms_ = 0;
    int64_t due_ms_ = 0;
};

}  // namespace node
