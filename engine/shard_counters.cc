#include "engine/shard_counters.h"

namespace coapgate::engine {

std::string_view ToString(Counter counter) noexcept {
  switch (counter) {
    case Counter::kReceived: return "received";
    case Counter::kDropTooShort: return "drop_too_short";
    case Counter::kDropBadVersion: return "drop_bad_version";
    case Counter::kDropFormatError: return "drop_format_error";
    case Counter::kDropStray: return "drop_stray";
    case Counter::kDropTruncated: return "drop_truncated";
    case Counter::kDropPendingDuplicate: return "drop_pending_duplicate";
    case Counter::kSendFailed: return "send_failed";
    case Counter::kReset: return "reset";
    case Counter::kReplyChanged: return "reply_2.04";
    case Counter::kReplyBadRequest: return "reply_4.00";
    case Counter::kReplyUnauthorized: return "reply_4.01";
    case Counter::kReplyOtherClientError: return "reply_4.xx_other";
    case Counter::kReplyServiceUnavailable: return "reply_5.03";
    case Counter::kReplyOtherServerError: return "reply_5.xx_other";
    case Counter::kDuplicateReplayed: return "duplicate_replayed";
    case Counter::kDedupFull: return "dedup_full";
    case Counter::kDedupEvictedDeviceOverK: return "dedup_evicted_device_over_k";
    case Counter::kDedupEvictedTableBound: return "dedup_evicted_table_bound";
    case Counter::kInflightFull: return "inflight_full";
    case Counter::kQueueFull: return "queue_full";
    case Counter::kBudgetExpired: return "budget_expired";
    case Counter::kSinkRefused: return "sink_refused";
    case Counter::kSinkDown: return "sink_down";
    case Counter::kDraining: return "draining";
    case Counter::kBootstrap: return "bootstrap";
    case Counter::kBootstrapQueueFull: return "bootstrap_queue_full";
    case Counter::kAccepted: return "accepted";
    case Counter::kSecureRecords: return "dtls_records";
    case Counter::kSessionGone: return "dtls_session_gone";
    case Counter::kLostAfterEnqueueAck: return "lost_after_enqueue_ack";
    case Counter::kCount_: break;
  }
  return "unknown";
}

}  // namespace coapgate::engine
