// Every setting of `tandem serve`. The loader (ConfigLoader) reads each by name and takes its range
// from here; `tandem settings` prints them for the README and the example config file.

extension SettingSection {
    var settings: [Setting] {
        switch self {
        case .server: Self.serverSettings
        case .sessions: Self.sessionsSettings
        case .providers: Self.providersSettings
        case .alerts: Self.alertsSettings
        case .relay: Self.relaySettings
        case .turn: Self.turnSettings
        case .sfu: Self.sfuSettings
        }
    }

    private static let serverSettings: [Setting] = [
        Setting(
            "dev", .flag, .server,
            "Development mode: listen on 127.0.0.1, make certificates, the token secret and the API key when missing, allow joins without a token from loopback.",
            default: .value("false")),
        Setting(
            "listen", .value("HOST:PORT"), .server, "Address to listen on, HOST:PORT or [IPv6]:PORT; --dev listens on 127.0.0.1:8443.",
            default: .value(#""0.0.0.0:8443""#)),
        Setting(
            "tls-cert", .value("PATH"), .server, "PEM certificate chain for TLS; SIGHUP reads it again.",
            default: .none("required unless --dev or --no-tls", example: #""/etc/tandem/fullchain.pem""#)),
        Setting("tls-key", .value("PATH"), .server, "PEM private key for TLS.", default: .none("required with tls-cert", example: #""/etc/tandem/privkey.pem""#)),
        Setting("no-tls", .flag, .server, "Serve plain HTTP and ws://, only behind a TLS-terminating proxy.", default: .value("false")),
        Setting(
            "no-demo", .flag, .server, "Do not serve the demo page at / (the client library at /tandem.js is always served).",
            default: .value("false"),
            why: "The demo call page at / helps people try a deployment; set true to keep / for your own app."),
        Setting(
            "allowed-origins", .list("ORIGIN"), .server,
            "Web pages of other origins that may open the signaling socket (https://app.example.com), or * for any. The server's own pages always may, and so may clients that send no Origin (apps); with --dev, any page from loopback.",
            default: .none("the server's own", example: #"["https://app.example.com"]"#)),
        Setting(
            "metrics-auth", .flag, .server, "Ask for the admin API key on /metrics too.", default: .value("false"),
            why: "Leave it off only when nobody but the scraper reaches this port."),
        Setting(
            "secret", .value("SECRET"), .server, "Secret that signs and verifies join tokens (HS256), at least 16 bytes (openssl rand -hex 32).",
            default: .none("required unless --dev"), why: "Prefer TANDEM_SECRET in the environment over a file."),
        Setting(
            "api-key", .value("KEY"), .server, "Bearer key of the admin API, at least 16 bytes.",
            default: .none("none: the admin API answers 401"), why: "Prefer TANDEM_API_KEY in the environment over a file."),
        Setting(
            "store", .value("STORE"), .server,
            "Session store: memory, sqlite:PATH (one node) or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full] (shared by many nodes; prefer TANDEM_STORE for a URL with a password).",
            default: .none("sqlite:DATA-DIR/tandem.db", example: #""sqlite:/var/lib/tandem/tandem.db""#)),
        Setting(
            "data-dir", .value("PATH"), .server, "Directory of the default store and the development certificates.",
            default: .value(#""./data""#)),
        Setting(
            "node", .value("NAME"), .server, "Name of this node, in welcome.server.node and the store's node registry; unique among the nodes of one store.",
            default: .none("the host name")),
        Setting(
            "cluster-secret", .value("SECRET"), .server,
            "Secret that authenticates and encrypts the links between nodes, at least 16 bytes, the same on every node of one store; a join through a node that does not serve its session goes over such a link to the node that does.",
            default: .none("required with a postgres store"), why: "Prefer TANDEM_CLUSTER_SECRET in the environment over a file."),
        Setting(
            "advertise", .value("HOST:PORT"), .server, "How other nodes reach this node (its signaling port, for their links) and operators see it, in the store's node registry (GET /v1/nodes).",
            default: .none("the listen address, when it is not a wildcard")),
        Setting(
            "log-level", .value("LEVEL"), .server, "Log level: trace, debug, info, notice, warning, error or critical.",
            default: .value(#""info""#)),
        Setting(
            "config", .value("PATH"), .server, "JSON config file with any of these settings (whole lines starting with // are comments).",
            default: .none("none"), inFile: false),
    ]

    private static let sessionsSettings: [Setting] = [
        Setting(
            "heartbeat-interval", .value("MS"), .sessions, "Heartbeat interval told to clients; the server pings each socket this often.",
            check: .integer(500...300_000, unit: "ms"), default: .value("5000"),
            why: "5 s heartbeats and a 15 s timeout, as LiveKit does: a dropped mobile socket usually comes back within a few seconds, and 15 s is still short enough that the other side is not left waiting long."
        ),
        Setting(
            "heartbeat-timeout", .value("MS"), .sessions, "A participant silent (or disconnected) this long is removed (peer-left timeout).",
            check: .integer(1000...3_600_000, unit: "ms"), default: .value("15000")),
        Setting(
            "max-participants", .value("N"), .sessions, "Most participants in one session (p2p and relay serve two).",
            check: .integer(2...1000), default: .value("16"), why: "One-to-one calls are the norm; an SFU session may hold more, up to this."),
        Setting(
            "rate-limit", .value("N"), .sessions, "Messages one socket may send per second; past it error rate_limited, and 200 refusals in 10 s close the socket (4429).",
            check: .number(1...100_000, unit: "/s"), default: .value("50"),
            why: "50 messages/s with a burst of 100 covers a trickle-ICE burst (tens of candidates at once) with room to spare; more than that from one socket is a bug or abuse."
        ),
        Setting("rate-burst", .value("N"), .sessions, "Burst above the rate limit.", check: .number(1...100_000), default: .value("100")),
        Setting(
            "max-candidates", .value("N"), .sessions, "ICE candidates one participant may send per epoch.", check: .integer(1...10_000),
            default: .value("100"), why: "A real browser gathers well under 100 candidates per negotiation."),
        Setting(
            "drain-timeout", .value("MS"), .sessions,
            "On SIGTERM or SIGINT the node drains (readyz 503, sockets told to resume elsewhere, 4000) and stops once its sockets have closed or this long has passed; a second signal stops it at once.",
            check: .integer(0...3_600_000, unit: "ms"), default: .value("10000")),
        Setting(
            "join-timeout", .value("MS"), .sessions, "Time a new socket has to send join; then it is closed (4408).",
            check: .integer(100...600_000, unit: "ms"), default: .value("10000")),
    ]

    private static let providersSettings: [Setting] = [
        Setting(
            "providers", .list("PROVIDER"), .providers, "Providers the arbiter may use: p2p, relay, sfu.",
            default: .none("every provider this server can serve")),
        Setting(
            "fallback-order", .list("PROVIDER"), .providers, "Where a session goes when its provider fails.",
            default: .value(#"["p2p", "relay", "sfu"]"#)),
        Setting("quality-target", .value("PROVIDER"), .providers, "Where a session goes when its quality stays bad.", default: .value(#""sfu""#)),
        Setting(
            "switch-rtt-ms", .value("MS"), .providers, "Reported RTT above which a health report is bad.",
            check: .number(1...60_000, unit: "ms"), default: .value("400"),
            why: "A session switches when one participant's reports stay past any of these for switch-reports reports in a row (about 15 s): beyond 400 ms RTT conversation breaks down (ITU-T G.114 puts 200 ms one-way as the limit), codecs conceal a few percent of loss but not a sustained 8 %, and 60 ms of jitter means a deep jitter buffer."
        ),
        Setting(
            "switch-loss-pct", .value("PCT"), .providers, "Reported loss above which a health report is bad.",
            check: .number(0...100, unit: "%"), default: .value("8")),
        Setting(
            "switch-jitter-ms", .value("MS"), .providers, "Reported jitter above which a health report is bad.",
            check: .number(1...60_000, unit: "ms"), default: .value("60")),
        Setting(
            "switch-reports", .value("N"), .providers, "Consecutive bad reports from one participant that switch the session.",
            check: .integer(1...1000), default: .value("3")),
        Setting(
            "cool-down", .value("MS"), .providers, "No quality switch this soon after any switch.", check: .integer(0...86_400_000, unit: "ms"),
            default: .value("30000"), why: "So that a session never flaps between providers."),
        Setting(
            "ice-servers", .list("URL"), .providers,
            "STUN and TURN servers handed to clients in every provider object, as given (no minted credentials). In the file an array of {urls, username, credential}; as a flag or variable URLs, comma-separated.",
            default: .value("[]")),
    ]

    private static let alertsSettings: [Setting] = [
        Setting(
            "alert-rtt-ms", .value("MS"), .alerts, "RTT above which a high_latency alert is raised.", check: .number(1...60_000, unit: "ms"),
            default: .value("300"), why: "Alerts fire earlier than switches, so an operator sees the trend before it costs a switch."),
        Setting(
            "alert-loss-pct", .value("PCT"), .alerts, "Loss above which a packet_loss alert is raised.", check: .number(0...100, unit: "%"),
            default: .value("5")),
        Setting(
            "alert-jitter-ms", .value("MS"), .alerts, "Jitter above which a high_jitter alert is raised.", check: .number(1...60_000, unit: "ms"),
            default: .value("50")),
        Setting(
            "alert-min-bitrate-kbps", .value("KBPS"), .alerts, "Bitrate below which a low_bandwidth alert is raised.",
            check: .number(0...1_000_000, unit: "kbps"), default: .value("150"), why: "Under 150 kbps even 240p video struggles."),
        Setting(
            "stale-after", .value("MS"), .alerts, "No health report for this long raises a stale_peer alert.",
            check: .integer(1000...3_600_000, unit: "ms"), default: .none("the heartbeat timeout", example: "15000"),
            why: "Clients report every heartbeat, so the heartbeat timeout without a report means a stale peer."),
    ]

    private static let relaySettings: [Setting] = [
        Setting(
            "relay-address", .list("IP"), .relay,
            "Address the media relay gathers ICE candidates on (not 0.0.0.0 or ::); enables provider relay.",
            default: .none("none: no relay (127.0.0.1 with --dev)", example: #"["10.0.0.5"]"#)),
        Setting(
            "relay-announced-ip", .list("IP"), .relay,
            "Address advertised instead in the relay's host candidates behind a 1:1 NAT (a container's public IP), one per family.",
            default: .none("none", example: #"["203.0.113.10"]"#)),
        Setting(
            "relay-stun-server", .value("IP:PORT"), .relay, "STUN server the relay's agents ask for a server-reflexive candidate.",
            default: .none("none")),
        Setting(
            "relay-threads", .value("N"), .relay, "GLib loop threads of the media relay; a session's legs share one.", check: .integer(1...256),
            default: .none("the number of cores", example: "2")),
        Setting(
            "relay-ports", .value("LOW-HIGH"), .relay, "UDP port range of the relay's ICE agents (publish it from a container).",
            default: .none("any free port", example: #""40000-40999""#)),
        Setting(
            "relay-dtls-cert", .value("PATH"), .relay, "PEM certificate for the relay's DTLS.",
            default: .none("a P-256 certificate made at start")),
        Setting("relay-dtls-key", .value("PATH"), .relay, "PEM private key for relay-dtls-cert.", default: .none("made with the certificate")),
    ]

    private static let turnSettings: [Setting] = [
        Setting(
            "turn-listen", .list("IP:PORT"), .turn, "STUN and TURN over UDP and TCP (3478 is the standard port).",
            default: .none("none: no TURN", example: #"["0.0.0.0:3478"]"#)),
        Setting(
            "turns-listen", .list("IP:PORT"), .turn,
            "TURN over TLS with the server's certificate (5349 is standard; 443 gets through firewalls that pass only HTTPS).",
            default: .none("none", example: #"["0.0.0.0:5349"]"#)),
        Setting(
            "turn-secret", .value("SECRET"), .turn,
            "Shared secret of the TURN REST credentials, at least 16 bytes; also for external TURN servers in turn-urls (coturn's use-auth-secret).",
            default: .none("required with TURN unless --dev")),
        Setting(
            "turn-public-host", .value("HOST"), .turn, "Host name or address clients reach TURN at, in the minted URLs.",
            default: .none("the turn-listen address", example: #""turn.example.com""#)),
        Setting(
            "turn-relay-ip", .list("IP"), .turn, "Address relay sockets are bound to, one IPv4 and one IPv6 at most.",
            default: .none("the turn-listen address", example: #"["203.0.113.10"]"#)),
        Setting(
            "turn-external-ip", .list("IP"), .turn, "Address advertised in relayed candidates when the server sits behind a 1:1 NAT, one per family.",
            default: .none("none")),
        Setting(
            "turn-relay-ports", .value("LOW-HIGH"), .turn, "Relay port range (LOW < HIGH, from 1024).", default: .value(#""49152-65535""#)),
        Setting("turn-realm", .value("REALM"), .turn, "TURN realm, 1 to 127 bytes.", default: .value(#""tandem""#)),
        Setting(
            "turn-allow-loopback-peers", .negatableFlag, .turn,
            "Let TURN relay to loopback peers (calls between tabs on one machine); --no-turn-allow-loopback-peers denies them in dev mode too.",
            default: .none("off; on in --dev when TURN listens on loopback only")),
        Setting(
            "turn-allow-peers", .list("PREFIX"), .turn, "Peer addresses or prefixes allowed although in a denied range.", default: .none("none")),
        Setting("turn-deny-peers", .list("PREFIX"), .turn, "Peer addresses or prefixes always denied.", default: .none("none")),
        Setting(
            "turn-user-quota", .value("N"), .turn, "Most allocations per identity, 0 for no limit (486 past it).", check: .integer(0...1_000_000),
            default: .value("64"), why: "A participant needs a few allocations per ICE restart."),
        Setting(
            "turn-total-quota", .value("N"), .turn, "Most allocations in all, 0 for no limit.", check: .integer(0...1_000_000), default: .value("0")),
        Setting(
            "turn-max-streams", .value("N"), .turn,
            "Most TCP and TLS connections in all; a new one past it is closed at once, one without an allocation for 10 s is closed, and one that does not read its answers is not read either.",
            check: .integer(1...1_000_000), default: .value("4096"), why: "Each connection is a file descriptor."),
        Setting(
            "turn-max-streams-per-ip", .value("N"), .turn, "Most TCP and TLS connections from one IP address.", check: .integer(1...1_000_000),
            default: .value("32")),
        Setting(
            "turn-max-bps", .value("BYTES"), .turn, "Bytes per second one allocation may relay each way, 0 for no cap.",
            check: .integer(0...1_000_000_000), default: .value("0")),
        Setting(
            "turn-allocate-rate", .value("N"), .turn, "Allocate requests one source IP may send per second, across TURN's threads, 0 for no limit (486 past it).",
            check: .integer(0...1_000_000), default: .value("200"), why: "A NATed office is one IP address."),
        Setting(
            "turn-unauthenticated-rate", .value("N"), .turn,
            "Answers sent without authentication (Binding responses, 401 challenges, errors) per second to one source IP, 0 for no limit; past it requests go unanswered, so that a spoofed source cannot make TURN a reflector.",
            check: .integer(0...1_000_000), default: .value("100")),
        Setting(
            "turn-threads", .value("N"), .turn, "Threads of the TURN service, each with its UDP listener and relay sockets.",
            check: .integer(1...256), default: .none("the number of cores")),
        Setting(
            "turn-credential-ttl", .value("SECONDS"), .turn, "Lifetime of minted credentials, checked at Allocate, so a call outlives it.",
            check: .integer(60...31_536_000, unit: "s"), default: .value("86400")),
        Setting(
            "turn-urls", .list("URL"), .turn, "External turn:, turns: or stun: URLs sharing turn-secret, handed out with minted credentials.",
            default: .none("none")),
    ]

    private static let sfuSettings: [Setting] = [
        Setting(
            "sfu-url", .value("URL"), .sfu, "Base URL of a Daily-style SFU REST API; enables provider sfu.",
            default: .none("none: no SFU", example: #""https://api.daily.co/v1""#)),
        Setting(
            "sfu-api-key", .value("KEY"), .sfu, "API key of the SFU REST API, at least 16 bytes.", default: .none("required with sfu-url"),
            why: "Better in TANDEM_SFU_API_KEY than in a file."),
        Setting(
            "sfu-standin", .value("HOST:PORT"), .sfu, "With --dev: run a local stand-in of Daily's REST API there and use it as the SFU.",
            default: .none("none")),
        Setting(
            "sfu-prepare", .value("WHEN"), .sfu,
            "When a session's SFU room and tokens are made: session-start, quality-trend (the first report past an alert or switch threshold) or on-demand.",
            default: .value(#""quality-trend""#),
            why: "Rooms only for sessions whose quality trends down; session-start makes every switch instant at one room per session (Daily allows 20 requests/s)."
        ),
        Setting(
            "sfu-room-ttl", .value("SECONDS"), .sfu, "Rooms and their tokens stop admitting this long after they are made; the service collects them.",
            check: .integer(60...2_592_000, unit: "s"), default: .value("86400")),
        Setting(
            "sfu-timeout", .value("MS"), .sfu, "Bound of one API request; 429 and 5xx are retried within it.", check: .integer(100...120_000, unit: "ms"),
            default: .value("5000")),
        Setting(
            "sfu-rate-limit", .value("N"), .sfu,
            "API requests per second, client-side (Daily's documented limit); a call that could not go within sfu-timeout is refused at once (the joiner gets provider_unavailable).",
            check: .number(0.1...10_000, unit: "/s"), default: .value("20")),
        Setting(
            "sfu-delete-rate-limit", .value("N"), .sfu, "Room deletes per second, client-side (Daily's documented limit).",
            check: .number(0.1...10_000, unit: "/s"), default: .value("2")),
        Setting(
            "sfu-retry-after", .value("MS"), .sfu, "After the SFU service failed, no new attempt for this long.",
            check: .integer(0...3_600_000, unit: "ms"), default: .value("30000")),
    ]
}
