import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TandemWeb

/// Serves the browser client at `/tandem.js` and, unless turned off, the demo page at `/`.
struct WebRoutes {
    let serveDemo: Bool

    /// The demo loads only its own scripts and styles, talks only to this server, shows camera streams.
    static let demoPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; "
        + "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

    func register(on router: Router<BasicRequestContext>) {
        for asset in WebAsset.all.values where serveDemo || !asset.isDemo {
            // One buffer per file for the server's life: responses share it instead of copying the bytes.
            let body = ByteBuffer(bytes: asset.body)
            router.get(RouterPath(asset.route)) { request, _ in Self.respond(asset, body: body, to: request) }
            router.head(RouterPath(asset.route)) { request, _ in Self.respond(asset, body: nil, to: request) }
        }
    }

    /// `body` nil answers a HEAD: the same headers, no bytes.
    static func respond(_ asset: WebAsset, body: ByteBuffer?, to request: Request) -> Response {
        var headers: HTTPFields = [
            .contentType: asset.contentType,
            .eTag: asset.etag,
            // Revalidate every time: a new server version must not run against a cached old client.
            .cacheControl: "no-cache",
            .init("X-Content-Type-Options")!: "nosniff",
        ]
        if asset.contentType.hasPrefix("text/html") {
            headers[.contentSecurityPolicy] = demoPolicy
            headers[.init("Referrer-Policy")!] = "no-referrer"
            headers[.init("Permissions-Policy")!] = "camera=(self), microphone=(self)"
        }
        if let tags = request.headers[.ifNoneMatch], tags.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == asset.etag }) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentLength] = String(asset.body.count)
        return Response(status: .ok, headers: headers, body: body.map { .init(byteBuffer: $0) } ?? .init())
    }
}
