extension Setting {
    /// The settings given on a command line (`--name value`, `--name=value`, `--flag`, `--no-flag`),
    /// by name, as ``ConfigLoader`` takes them: a repeated list setting is joined with commas, a
    /// repeated single value is the last one given.
    public static func parse(arguments: [String]) throws -> [String: String] {
        var given: [String: String] = [:]
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw SetupError("unexpected argument \"\(argument)\": settings are written --name value")
            }
            let body = argument.dropFirst(2)
            let (name, inline) = body.firstIndex(of: "=").map { (String(body[..<$0]), Optional(String(body[body.index(after: $0)...]))) }
                ?? (String(body), nil)
            if name.hasPrefix("no-"), let setting = byName[String(name.dropFirst(3))], setting.form == .negatableFlag {
                guard inline == nil else { throw SetupError("--\(name) takes no value") }
                given[setting.name] = "false"
                continue
            }
            guard let setting = byName[name] else {
                let hint = closest(to: name).map { " (did you mean --\($0)?)" } ?? ""
                throw SetupError("unknown setting --\(name)\(hint)")
            }
            switch setting.form {
            case .flag, .negatableFlag:
                guard inline == nil else { throw SetupError("--\(name) takes no value; leave it out to keep it off") }
                given[name] = "true"
            case .value(let placeholder), .list(let placeholder):
                let value: String
                if let inline {
                    value = inline
                } else if let next = rest.first, !next.hasPrefix("--") {
                    value = next
                    rest = rest.dropFirst()
                } else {
                    throw SetupError("--\(name) needs a value: --\(name) <\(placeholder)>")
                }
                if case .list = setting.form, let earlier = given[name] {
                    given[name] = earlier + "," + value
                } else {
                    given[name] = value
                }
            }
        }
        return given
    }

    /// The declared name nearest to a mistyped one, when it is near enough to be what was meant.
    static func closest(to name: String) -> String? {
        let scored = all.map { ($0.name, editDistance($0.name, name)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, name.count / 4) else { return nil }
        return best
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
