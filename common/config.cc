#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace shoal {
namespace {

// Reads a YAML mapping of flag names to values into CLI11 config items.
//
// CLI11 (2.1) looks an item up as "--" + name and matches it against option
// long names exactly (underscores only match if the app ignores them), so
// "data_dir:" would not find "--data-dir". We resolve each key against the
// app's options here and hand CLI11 the spelling it will match. Unknown keys
// fail here, where the file name is known, rather than in CLI11's
// ConfigError::Extras which names only the key.
class yaml_config final : public CLI::Config {
 public:
  // app owns this formatter, so the pointer outlives every call.
  explicit yaml_config(CLI::App* app) : app_(app) {}

  // Writes the app's configurable options as "name: value" lines (CLI11's
  // config_to_str), so a dumped config reads back unchanged.
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string /*prefix*/) const override {
    std::string out;
    for (const CLI::Option* op : app->get_options()) {
      if (!op->get_configurable() || op->get_lnames().empty()) continue;
      std::vector<std::string> values = op->results();
      if (values.empty()) {
        if (!default_also || op->get_default_str().empty()) continue;
        values.push_back(op->get_default_str());
      }
      if (write_description && !op->get_description().empty()) {
        out += "# " + op->get_description() + "\n";
      }
      YAML::Emitter e;
      e << YAML::BeginMap << YAML::Key << op->get_lnames().front() << YAML::Value;
      if (values.size() == 1 && op->get_items_expected_max() <= 1) {
        e << values.front();
      } else {
        e << YAML::Flow << values;
      }
      e << YAML::EndMap;
      out += e.c_str();
      out += "\n";
    }
    return out;
  }

  // Parses the file; any key that is not a configurable long flag is an error.
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    const std::string file = config_file();
    YAML::Node root;
    try {
      root = YAML::Load(input);
    } catch (const YAML::Exception& e) {
      throw CLI::ConfigError("config file " + file + " is not valid YAML: " + e.what());
    }
    if (root.IsNull()) return {};
    if (!root.IsMap()) {
      throw CLI::ConfigError("config file " + file +
                             ": the top level must be a mapping of flag names to values");
    }

    std::vector<CLI::ConfigItem> items;
    std::set<const CLI::Option*> seen;
    for (const auto& kv : root) {
      const YAML::Node& key_node = kv.first;
      const YAML::Node& value = kv.second;
      std::string where = "config file ";
      where.append(file).append(" line ").append(std::to_string(key_node.Mark().line + 1));
      if (!key_node.IsScalar()) throw CLI::ConfigError(where.append(": keys must be plain names"));
      const std::string key = key_node.Scalar();
      auto fail = [&key, &where](const std::string& what) {
        std::string msg = "key \"";
        msg.append(key).append("\" in ").append(where).append(what);
        return CLI::ConfigError(msg);
      };

      auto [name, op] = resolve(key);
      if (op == nullptr) {
        std::string msg = "unknown key \"";
        msg.append(key).append("\" in ").append(where).append(
            " (keys are the long flag names without \"--\"; see --help)");
        throw CLI::ConfigError(msg);
      }
      if (!op->get_configurable()) {
        throw fail(std::string(": --").append(name).append(" cannot be set from a config file"));
      }
      if (!seen.insert(op).second) {
        throw fail(std::string(": --").append(name).append(" is set more than once in the file"));
      }

      CLI::ConfigItem item;
      item.name = name;
      const bool flag = op->get_expected_min() == 0;
      if (value.IsScalar()) {
        item.inputs.push_back(scalar(value, flag));
      } else if (value.IsSequence()) {
        for (const auto& element : value) {
          if (!element.IsScalar()) throw fail(": list elements must be plain values");
          item.inputs.push_back(scalar(element, flag));
        }
      } else if (value.IsNull()) {
        throw fail(" has no value (remove the line to keep the default)");
      } else {
        throw fail(": nested mappings are not supported; use a scalar or a list");
      }
      items.push_back(std::move(item));
    }
    return items;
  }

 private:
  // The option a key names and the spelling CLI11 will match it by, trying the
  // key as written, then with '_' as '-', then with '-' as '_'.
  std::pair<std::string, CLI::Option*> resolve(const std::string& key) const {
    std::string dashed = key;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    std::string underscored = key;
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    for (const std::string& candidate : {key, dashed, underscored}) {
      if (candidate.empty() || candidate.front() == '-') continue;
      if (CLI::Option* op = app_->get_option_no_throw("--" + candidate)) return {candidate, op};
    }
    return {key, nullptr};
  }

  // YAML spells booleans many ways (yes/no/on/off/True); flags get the
  // "true"/"false" CLI11 understands, every other value keeps its text.
  static std::string scalar(const YAML::Node& node, bool flag) {
    if (flag) {
      bool b = false;
      if (YAML::convert<bool>::decode(node, b)) return b ? "true" : "false";
    }
    return node.Scalar();
  }

  // The path CLI11 is reading: the --config value, else its default.
  std::string config_file() const {
    const CLI::Option* opt = app_->get_config_ptr();
    if (opt == nullptr) return "(stream)";
    auto path = opt->as<std::string>();
    return path.empty() ? "(stream)" : path;
  }

  CLI::App* app_;
};

}  // namespace

void add_yaml_config(CLI::App& app, const std::string& default_path) {
  // Our formatter already rejects unknown keys; the CLI11 setting keeps that
  // true even for items it would otherwise drop silently.
  app.allow_config_extras(false);
  app.config_formatter(std::make_shared<yaml_config>(&app));
  app.set_config("--config", default_path, "YAML config file; every flag is also a key");
}

}  // namespace shoal
