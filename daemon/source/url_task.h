#pragma once
// Task ids of plain HTTP(S) files (`shoalctl get`, DESIGN §2): SHA-256 of the
// URL without its volatile query parameters, so the same file behind
// differently signed URLs is one task.

#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal::source {

// The URL as used for the id: scheme and host lower-cased, default port
// dropped, fragment dropped, and query parameters removed whose names (case
// insensitive) are signatures, expiry times or tokens: X-Amz-*, X-Goog-*,
// Signature, Expires, Key-Pair-Id, Policy, token, access_token, sig, se, st,
// sp, sv, sr, spr, ss, srt, skoid, sktid, skt, ske, sks, skv (S3, GCS,
// CloudFront, Azure SAS), and containerd's ns. Other parameters are kept in order.
// Errors: not an absolute http(s) URL, or longer than 8 KiB.
result<std::string> canonical_file_url(std::string_view url);
// 64 lowercase hex: SHA-256 of canonical_file_url(url) (plus "#" + tag when a
// tag is given, to keep two versions of a mutable URL apart).
result<std::string> url_task_id(std::string_view url, std::string_view tag = {});

}  // namespace shoal::source
