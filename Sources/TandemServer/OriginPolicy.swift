/// Which web pages may open the signaling WebSocket, by the `Origin` header browsers send with it: a
/// page of this server (same origin), those named in `allowed-origins` (or any, with `*`), and in
/// `--dev` any page when the socket comes from loopback. Browsers send the page's `http(s)` origin, or
/// `null`; a client that sends none, or another kind (some WebSocket libraries send their `ws://` URL),
/// is no page that another site could have turned against its user, and is let in.
public struct OriginPolicy: Sendable, Equatable {
    /// Origins as browsers write them (`https://app.example.com`, with a port when not the default),
    /// lower-cased once here rather than on every check.
    public let allowed: [String]
    public let dev: Bool
    /// Whether this server speaks TLS, for the default port of its own origin.
    public let tls: Bool

    public init(allowed: [String] = [], dev: Bool = false, tls: Bool = true) {
        self.allowed = allowed.map { $0.lowercased() }
        self.dev = dev
        self.tls = tls
    }

    /// Every `Origin` the request carries must be admitted (a browser sends one).
    public func admits(origins: [String], host: String?, fromLoopback: Bool) -> Bool {
        origins.allSatisfy { admits(origin: $0, host: host, fromLoopback: fromLoopback) }
    }

    public func admits(origin: String?, host: String?, fromLoopback: Bool) -> Bool {
        guard let origin else { return true }
        let lowered = origin.lowercased()
        guard lowered == "null" || lowered.hasPrefix("http://") || lowered.hasPrefix("https://") else { return true }
        if dev && fromLoopback { return true }
        if allowed.contains("*") { return true }
        if allowed.contains(lowered) { return true }
        guard let host, let page = Self.authority(ofOrigin: lowered) else { return false }
        return page == Self.withPort(host.lowercased(), defaultPort: tls ? 443 : 80)
    }

    /// `host:port` of an origin (`scheme://host[:port]`), the port filled in from the scheme.
    static func authority(ofOrigin origin: String) -> String? {
        for (scheme, port) in [("https://", 443), ("http://", 80)] where origin.hasPrefix(scheme) {
            let rest = origin.dropFirst(scheme.count)
            guard !rest.isEmpty, !rest.contains("/") else { return nil }
            return withPort(String(rest), defaultPort: port)
        }
        return nil
    }

    /// `host` with `:port` added when it has none (`[v6]` literals included).
    static func withPort(_ host: String, defaultPort: Int) -> String {
        let afterBracket = host.lastIndex(of: "]").map { host[host.index(after: $0)...] } ?? host[...]
        return afterBracket.contains(":") ? host : "\(host):\(defaultPort)"
    }
}
