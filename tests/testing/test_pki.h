// A throwaway PKI for TLS tests, made by openssl at test time: CA "ca" signing "server" and
// "client", and CA "rogue" signing "impostor" (a certificate that must be refused). Each
// <name>.pem / <name>.key lands in `dir`; certificates name localhost and 127.0.0.1 and
// are valid for a day. EC keys, so the whole set takes milliseconds.
#ifndef GRPO_TESTS_TESTING_TEST_PKI_H_
#define GRPO_TESTS_TESTING_TEST_PKI_H_

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace grpo::testing_util {

inline bool RunOpenssl(const std::string& dir, const std::string& args) {
  return std::system(
             absl::StrCat("cd '", dir, "' && openssl ", args, " >/dev/null 2>&1").c_str()) == 0;
}

inline bool MakeTestCa(const std::string& dir, const std::string& name) {
  return RunOpenssl(dir, absl::StrCat("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                                      "-nodes -days 1 -subj /CN=", name, " -keyout ", name,
                                      ".key -out ", name, ".pem"));
}

inline bool MakeTestCert(const std::string& dir, const std::string& name, const std::string& ca) {
  std::ofstream(dir + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  return RunOpenssl(dir, absl::StrCat("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                                      "-nodes -keyout ", name, ".key -out ", name,
                                      ".csr -subj /CN=", name)) &&
         RunOpenssl(dir, absl::StrCat("x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ",
                                      ca, ".key -CAcreateserial -days 1 -extfile san.ext -out ",
                                      name, ".pem"));
}

// False if openssl is missing or failed.
inline bool MakeTestPki(const std::string& dir) {
  return MakeTestCa(dir, "ca") && MakeTestCa(dir, "rogue") && MakeTestCert(dir, "server", "ca") &&
         MakeTestCert(dir, "client", "ca") && MakeTestCert(dir, "impostor", "rogue");
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_TEST_PKI_H_
