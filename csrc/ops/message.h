// Error messages built without iostreams: SQUASH_CHECK / SQUASH_CHECK_VALUE format every
// argument here (numbers with std::to_string / snprintf) and hand TORCH_CHECK one string.
//
// Why: on the lent GPU machine (torch 2.11.0+cu130, g++ 13.3, 2026-11-24) every TORCH_CHECK of
// ours whose message inserted a number into c10::str's std::ostringstream crashed the process
// (SIGSEGV in 36 bad-input tests), while messages made only of strings raised cleanly; the same
// code passes here (torch 2.13). Until the cause is pinned down, our messages never put a number
// through an ostream: bad input must raise, never crash.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

namespace squash {

// Python's dtype name ("float16", "int8", ...): every message speaks torch's Python vocabulary,
// never the C++ enum names ("Half", "Char").
inline std::string dtype_name(at::ScalarType t) { return std::string(c10::getDtypeNames(t).first); }

}  // namespace squash

namespace squash::detail {

inline std::string msg_part(const char* s) { return s ? s : "(null)"; }
inline std::string msg_part(std::string_view s) { return std::string(s); }
inline std::string msg_part(const std::string& s) { return s; }
inline std::string msg_part(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string msg_part(T v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else return std::to_string(v);
}
inline std::string msg_part(c10::IntArrayRef list) {
  std::string s = "[";
  for (size_t i = 0; i < list.size(); ++i) s += (i ? ", " : "") + std::to_string(list[i]);
  return s + "]";
}
inline std::string msg_part(at::ScalarType t) { return dtype_name(t); }
inline std::string msg_part(const c10::Device& d) { return d.str(); }

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  (s.append(msg_part(args)), ...);
  return s;
}

}  // namespace squash::detail

// ValueError (bad arguments) and RuntimeError (CUDA failures, internal states).
#define SQUASH_CHECK_VALUE(cond, ...) \
  TORCH_CHECK_VALUE(cond, ::squash::detail::message(__VA_ARGS__))
#define SQUASH_CHECK(cond, ...) TORCH_CHECK(cond, ::squash::detail::message(__VA_ARGS__))
