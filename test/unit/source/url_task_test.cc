#include <catch2/catch.hpp>

#include "daemon/source/url_task.h"

using shoal::source::canonical_file_url;
using shoal::source::url_task_id;

TEST_CASE("url task: volatile query parameters do not change the task id") {
  auto a = url_task_id(
      "https://bucket.s3.amazonaws.com/models/w.bin?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc"
      "&X-Amz-Expires=300&versionId=7");
  auto b = url_task_id("HTTPS://Bucket.S3.amazonaws.com:443/models/w.bin?versionId=7&X-Amz-Signature=zzz#frag");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == *b);
  CHECK(a->size() == 64);
  CHECK(*canonical_file_url("https://Host/x?sig=1&se=2&a=b&ns=docker.io") == "https://host/x?a=b");
  CHECK(*canonical_file_url("http://h:80") == "http://h/");
  // Kept parameters matter; a tag keeps versions apart.
  CHECK(*url_task_id("https://h/x?v=1") != *url_task_id("https://h/x?v=2"));
  CHECK(*url_task_id("https://h/x", "a") != *url_task_id("https://h/x", "b"));
}

TEST_CASE("url task: only absolute http(s) URLs without credentials") {
  CHECK_FALSE(url_task_id("ftp://h/x"));
  CHECK_FALSE(url_task_id("/relative"));
  CHECK_FALSE(url_task_id("https://user:pw@h/x"));
  CHECK_FALSE(url_task_id(std::string(9000, 'a')));
}
