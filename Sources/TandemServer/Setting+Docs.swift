import Foundation
import TandemProtocol

// The settings' documentation, made from their declarations: `tandem serve --help`, the README's
// table and the example config file. Tests compare the README and deploy/tandem.jsonc with these.

extension Setting {
    /// The default as a reader wants it: `5000 ms`, `p2p, relay, sfu`, `off`.
    public var defaultText: String {
        switch byDefault {
        case .none(let text, _): return text
        case .value(let json):
            switch try? JSONParser.parse(Array(json.utf8)) {
            case .bool(let on)?: return on ? "on" : "off"
            case .string(let text)?: return text
            case .array(let items)?: return items.isEmpty ? "none" : items.compactMap(\.stringValue).joined(separator: ", ")
            default: return json + unitSuffix
            }
        }
    }

    /// `default: 5000 ms`, or what a required setting needs.
    var defaultNote: String { defaultText.hasPrefix("required") ? defaultText : "default: \(defaultText)" }

    private var unitSuffix: String {
        let unit: String?
        switch check {
        case .free: unit = nil
        case .integer(_, let u): unit = u
        case .number(_, let u): unit = u
        }
        guard let unit else { return "" }
        return unit.first?.isLetter == true ? " " + unit : unit
    }

    /// `--NAME <VALUE>`, as `--help` shows it.
    public var usage: String {
        switch form {
        case .flag: "--\(name)"
        case .negatableFlag: "--\(name), --no-\(name)"
        case .value(let placeholder): "--\(name) <\(placeholder)>"
        case .list(let placeholder): "--\(name) <\(placeholder)> ..."
        }
    }

    /// The settings of `tandem serve --help`, by section, wrapped to `width` columns.
    public static func helpText(width: Int = 79) -> String {
        var lines = [
            "Every setting is also a TANDEM_* environment variable (--heartbeat-interval",
            "is TANDEM_HEARTBEAT_INTERVAL) and a key of the JSON file named by --config.",
            "Flags win over the environment, which wins over the file. Settings marked",
            "... repeat.",
        ]
        for section in SettingSection.allCases {
            lines += ["", section.title.uppercased() + ":"]
            for setting in section.settings {
                let labelWidth = 30
                var text = setting.help
                if setting.form != .flag { text += " (\(setting.defaultNote))" }
                let label = "  " + setting.usage
                let body = wrap(text, width: width - labelWidth - 2)
                if label.count < labelWidth {
                    lines.append(label.padding(toLength: labelWidth + 2, withPad: " ", startingAt: 0) + body[0])
                    lines += body.dropFirst().map { String(repeating: " ", count: labelWidth + 2) + $0 }
                } else {
                    lines.append(label)
                    lines += body.map { String(repeating: " ", count: labelWidth + 2) + $0 }
                }
            }
        }
        return lines.joined(separator: "\n")
    }

    /// The README's settings tables, one per section.
    public static func markdown() -> String {
        var out: [String] = []
        for section in SettingSection.allCases {
            out += ["", "**\(section.title)**"]
            if let note = section.note { out += ["", note] }
            out += ["", "| setting | default | meaning |", "|---|---|---|"]
            for setting in section.settings {
                let name = setting.inFile ? "`\(setting.name)`" : "`\(setting.name)` (flag and variable only)"
                out.append("| \(name) | \(setting.defaultText) | \(setting.help.replacingOccurrences(of: "|", with: "\\|")) |")
            }
        }
        return out.dropFirst().joined(separator: "\n") + "\n"
    }

    /// `deploy/tandem.jsonc`: every setting of the file with its default and why. Settings without a
    /// value to state, and those of backends that are off until configured, are commented out.
    public static func exampleFile() -> String {
        var out = [
            "// Tandem configuration: every setting with its default and why. Made by `tandem settings --jsonc`.",
            "// Give it with `tandem serve --config deploy/tandem.jsonc`. Flags and TANDEM_* variables override it.",
            "// Whole lines starting with // are comments; the rest is JSON.",
            "{",
        ]
        var members: [(line: String, comments: [String])] = []
        var pending: [String] = []
        for section in SettingSection.allCases {
            pending += (section == .server ? [] : [""]) + ["// \(section.title)"]
            if let note = section.note { pending += wrap(note, width: 96).map { "// " + $0 } }
            for setting in section.settings where setting.inFile {
                pending += wrap(setting.help + (setting.why.map { " " + $0 } ?? ""), width: 96).map { "// " + $0 }
                switch setting.byDefault {
                case .value(let json) where !section.isOptIn:
                    members.append(("\"\(setting.name)\": \(json)", pending))
                    pending = []
                case .value(let json), .none(_, example: let json?):
                    pending.append("// \"\(setting.name)\": \(json),")
                case .none(_, example: nil):
                    pending.append("// \"\(setting.name)\": …  (\(setting.defaultNote))")
                }
            }
        }
        for (index, member) in members.enumerated() {
            out += member.comments.map { $0.isEmpty ? "" : "  " + $0 }
            out.append("  " + member.line + (index == members.count - 1 ? "" : ","))
        }
        out += pending.map { $0.isEmpty ? "" : "  " + $0 }
        out.append("}")
        return out.joined(separator: "\n") + "\n"
    }

    /// Words of `text` in lines of at most `width` characters (a longer word gets a line of its own).
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty, line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        return lines + [line]
    }
}
