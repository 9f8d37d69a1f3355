#pragma once
// Prometheus text-format metrics (exposition format 0.0.4).
// Counters, gauges and histograms with fixed label names; thread-safe
// (atomics for values, a mutex only when a new label set is first seen).

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace shoal::metrics {

using labels = std::vector<std::string>;  // label values, in the family's label-name order

class counter {
 public:
  void inc(double v = 1.0);
  double value() const;
 private:
  std::atomic<double> v_{0};
};

class gauge {
 public:
  void set(double v);
  void add(double v);
  double value() const;
 private:
  std::atomic<double> v_{0};
};

class histogram {
 public:
  explicit histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // cumulative bucket counts (one per bound, then +Inf), sum and count
  std::vector<std::uint64_t> buckets() const;
  double sum() const;
  std::uint64_t count() const;
 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
  std::atomic<std::uint64_t> count_{0};
};

template <class M>
class family;

class registry {
 public:
  // Names follow shoal_<component>_<what>_<unit>; help is one line.
  family<counter>& add_counter(std::string name, std::string help, std::vector<std::string> label_names = {});
  family<gauge>& add_gauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  family<histogram>& add_histogram(std::string name, std::string help, std::vector<double> bounds,
                                   std::vector<std::string> label_names = {});
  // Text exposition of every family, sorted by name.
  std::string render() const;

  struct family_base {
    virtual ~family_base() = default;
    virtual void render(std::string& out) const = 0;
  };

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<family_base>> families_;
};

template <class M>
class family : public registry::family_base {
 public:
  family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds = {});
  // The metric for these label values (created on first use; references stay valid).
  M& with(const labels& values = {});
  // Name and label names as registered (the registry checks re-registrations against them).
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  void render(std::string& out) const override;
 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<labels, std::unique_ptr<M>> children_;
};

// Exponential bucket bounds: start, start*factor, ... (count bounds).
std::vector<double> exponential_buckets(double start, double factor, int count);

}  // namespace shoal::metrics
