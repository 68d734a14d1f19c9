import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisRuntime

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration (and plugin rules, key files); print every error and expiry warning.")

    @OptionGroup var options: ConfigOption
    @Flag(name: .customLong("print-effective"), help: "Print the resolved configuration as JSON (defaults filled in, paths absolute).")
    var printEffective = false
    @Option(name: .customLong("expiry-warning-days"), help: "Warn about API keys that expire within this many days.")
    var expiryWarningDays: Int = APIKeyExpiry.defaultWarningDays

    func run() throws {
        let loaded = try options.load()
        let config = loaded.config
        let now = Int64(time(nil))
        for key in APIKeyExpiry.expiring(config.consumers, now: now, warningDays: max(0, expiryWarningDays)) {
            printError("warning: \(key.describe(now: now))")
        }
        if printEffective {
            print(JSONCodec.serialize(EffectiveConfig.document(of: config, source: loaded.bundle.configBytes), pretty: true))
        } else {
            print("\(options.config): ok (\(config.routes.count) routes, \(config.upstreams.count) upstreams)")
        }
    }
}
