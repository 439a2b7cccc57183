import Foundation
/// One setting of `tandem serve`, declared once. Its name is the flag `--NAME`, the environment
/// variable `TANDEM_NAME` (upper case, `_` for `-`) and the config file's key `"NAME"`; the command's
/// arguments, `--help`, the README's table and `deploy/tandem.jsonc` are all made from ``Setting/all``.
public struct Setting: Sendable {
    /// How the setting is written on the command line.
    public enum Form: Sendable, Equatable {
        /// `--NAME` alone turns it on.
        case flag
        /// `--NAME` or `--no-NAME`; given neither, the setting has a default of its own.
        case negatableFlag
        /// `--NAME VALUE`; the text is the value's placeholder in `--help`.
        case value(String)
        /// `--NAME VALUE`, repeatable; comma-separated in a variable, an array in the file.
        case list(String)
    }

    /// What the loader accepts, where a range says it all; other settings are checked by the loader's
    /// own parsing (addresses, paths, provider names).
    public enum Check: Sendable, Equatable {
        case free
        case integer(ClosedRange<Int>, unit: String? = nil)
        case number(ClosedRange<Double>, unit: String? = nil)
    }

    /// What holds when the setting is not given.
    public enum Default: Sendable, Equatable {
        /// This value, as JSON: the example file states it, and `--help` and the README show it.
        case value(String)
        /// No value to state: what happens instead, and optionally an example value (JSON) for the file.
        case none(String, example: String? = nil)
    }

    public let name: String
    public let form: Form
    public let section: SettingSection
    /// One or two sentences: `--help` and the README's meaning column.
    public let help: String
    public let check: Check
    public let byDefault: Default
    /// Why the default is what it is, for the example config file.
    public let why: String?
    /// False for the one setting that cannot be in the file: the file's own path.
    public let inFile: Bool

    init(
        _ name: String, _ form: Form, _ section: SettingSection, _ help: String, check: Check = .free,
        default byDefault: Default, why: String? = nil, inFile: Bool = true
    ) {
        self.name = name
        self.form = form
        self.section = section
        self.help = help
        self.check = check
        self.byDefault = byDefault
        self.why = why
        self.inFile = inFile
    }

    /// The environment variable that sets it.
    public var environmentName: String { Self.environmentName(of: name) }

    static func environmentName(of name: String) -> String { "TANDEM_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }

    /// Every setting, in the order of `--help` and the docs.
    public static let all: [Setting] = SettingSection.allCases.flatMap(\.settings)

    static let byName: [String: Setting] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// The declaration of `name`; every name the loader reads is declared, which a test checks.
    public static func named(_ name: String) -> Setting? { byName[name] }
}

/// A group of settings, with a title and, for the backends that are off until configured, a note.
public enum SettingSection: String, CaseIterable, Sendable {
    case server, sessions, providers, alerts, relay, turn, sfu

    public var title: String {
        switch self {
        case .server: "Listening, TLS, secrets and the store"
        case .sessions: "Sessions and sockets"
        case .providers: "Providers, ICE servers and switching"
        case .alerts: "Health alerts"
        case .relay: "The media relay"
        case .turn: "TURN"
        case .sfu: "SFU"
        }
    }

    /// Whether the section's settings need the backend enabled first (the example file leaves them
    /// commented out, since a stray one refuses to start).
    public var isOptIn: Bool { [.relay, .turn, .sfu].contains(self) }

    public var note: String? {
        switch self {
        case .relay:
            "The media relay (provider relay) is off until it is given the addresses to gather ICE candidates on "
                + "(--dev uses 127.0.0.1). Behind a 1:1 NAT, e.g. a container publishing UDP 40000-40999, give relay-address, "
                + "relay-announced-ip (the public address) and relay-ports."
        case .turn:
            "Tandem's own TURN service is off until it is given an address. Peers in loopback, private, link-local, "
                + "multicast and reserved ranges are refused unless turn-allow-peers lists them: a TURN server must not "
                + "become a way into the operator's network."
        case .sfu:
            "The SFU (provider sfu) is off until a Daily-style REST API is given."
        default: nil
        }
    }
}
