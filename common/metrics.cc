#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <type_traits>

namespace shoal::metrics {
namespace {

// Go's strconv.FormatFloat(v, 'g', -1, 64) spelling, as Prometheus clients use:
// shortest round-trip form, "+Inf", "-Inf", "NaN".
std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

void append_escaped_help(std::string& out, const std::string& help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_escaped_label(std::string& out, const std::string& value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// `{a="x",b="y"}` with an optional trailing le label; nothing when empty.
std::string label_set(const std::vector<std::string>& names, const labels& values,
                      const std::string* le = nullptr) {
  if (names.empty() && le == nullptr) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i != 0) out += ',';
    out += names[i];
    out += "=\"";
    append_escaped_label(out, values[i]);
    out += '"';
  }
  if (le != nullptr) {
    if (!names.empty()) out += ',';
    out += "le=\"";
    out += *le;
    out += '"';
  }
  out += '}';
  return out;
}

void add_double(std::atomic<double>& a, double v) { a.fetch_add(v, std::memory_order_relaxed); }

template <class M>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<M, counter>) {
    return "counter";
  } else if constexpr (std::is_same_v<M, gauge>) {
    return "gauge";
  } else {
    return "histogram";
  }
}

}  // namespace

void counter::inc(double v) {
  // Counters only go up; a negative increment is a caller bug that would make
  // Prometheus see a reset, so it is dropped.
  if (!(v > 0)) return;
  add_double(v_, v);
}

double counter::value() const { return v_.load(std::memory_order_relaxed); }

void gauge::set(double v) { v_.store(v, std::memory_order_relaxed); }
void gauge::add(double v) { add_double(v_, v); }
double gauge::value() const { return v_.load(std::memory_order_relaxed); }

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  // +Inf is implicit and NaN cannot be ordered; keep bounds sorted and unique
  // so buckets are cumulative in order.
  std::erase_if(bounds_, [](double b) { return std::isnan(b) || std::isinf(b); });
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
}

void histogram::observe(double v) {
  // Bucket i counts values in (bounds[i-1], bounds[i]]; the last is (max, +Inf).
  auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                    bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  add_double(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<std::uint64_t> histogram::buckets() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

double histogram::sum() const { return sum_.load(std::memory_order_relaxed); }
std::uint64_t histogram::count() const { return count_.load(std::memory_order_relaxed); }

template <class M>
family<M>::family(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  // A metric without labels exists from the start, so it is scraped as 0
  // before anything happens rather than being absent.
  if (label_names_.empty()) with({});
}

template <class M>
M& family<M>::with(const labels& values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + " takes " +
                                std::to_string(label_names_.size()) + " label values, got " +
                                std::to_string(values.size()));
  }
  std::lock_guard lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    std::unique_ptr<M> m;
    if constexpr (std::is_same_v<M, histogram>) {
      m = std::make_unique<histogram>(bounds_);
    } else {
      m = std::make_unique<M>();
    }
    it = children_.emplace(values, std::move(m)).first;
  }
  return *it->second;
}

template <class M>
void family<M>::render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  append_escaped_help(out, help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type_name<M>();
  out += '\n';
  std::lock_guard lock(mu_);
  for (const auto& [values, m] : children_) {
    if constexpr (std::is_same_v<M, histogram>) {
      auto counts = m->buckets();
      const auto& bounds = m->bounds();
      for (std::size_t i = 0; i < counts.size(); ++i) {
        std::string le = i < bounds.size() ? format_value(bounds[i]) : "+Inf";
        out += name_ + "_bucket" + label_set(label_names_, values, &le) + ' ' +
               std::to_string(counts[i]) + '\n';
      }
      std::string ls = label_set(label_names_, values);
      out += name_ + "_sum" + ls + ' ' + format_value(m->sum()) + '\n';
      out += name_ + "_count" + ls + ' ' + std::to_string(m->count()) + '\n';
    } else {
      out += name_ + label_set(label_names_, values) + ' ' + format_value(m->value()) + '\n';
    }
  }
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

namespace {

// The family registered under name, created by make() on first use. Adding the
// same name twice with the same type and labels returns the first family, so
// components can declare their metrics independently; a clash is a bug.
template <class M, class Make>
family<M>& add_family(std::map<std::string, std::unique_ptr<registry::family_base>>& families,
                      const std::string& name, const std::vector<std::string>& label_names,
                      Make make) {
  auto it = families.find(name);
  if (it == families.end()) {
    it = families.emplace(name, make()).first;
    return static_cast<family<M>&>(*it->second);
  }
  auto* existing = dynamic_cast<family<M>*>(it->second.get());
  if (existing == nullptr || existing->label_names() != label_names) {
    throw std::invalid_argument("metric " + name +
                                " is already registered with another type or label names");
  }
  return *existing;
}

}  // namespace

family<counter>& registry::add_counter(std::string name, std::string help,
                                       std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return add_family<counter>(families_, name, label_names, [&] {
    return std::make_unique<family<counter>>(name, std::move(help), label_names);
  });
}

family<gauge>& registry::add_gauge(std::string name, std::string help,
                                   std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return add_family<gauge>(families_, name, label_names, [&] {
    return std::make_unique<family<gauge>>(name, std::move(help), label_names);
  });
}

family<histogram>& registry::add_histogram(std::string name, std::string help,
                                           std::vector<double> bounds,
                                           std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return add_family<histogram>(families_, name, label_names, [&] {
    return std::make_unique<family<histogram>>(name, std::move(help), label_names,
                                               std::move(bounds));
  });
}

std::string registry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, f] : families_) f->render(out);
  return out;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(std::max(count, 0)));
  double b = start;
  for (int i = 0; i < count; ++i) {
    out.push_back(b);
    b *= factor;
  }
  return out;
}

}  // namespace shoal::metrics
