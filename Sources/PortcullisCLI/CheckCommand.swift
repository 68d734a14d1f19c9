import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPlugins
import PortcullisRuntime

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration (and plugin rules, key files); print every error and expiry warning.")

    @OptionGroup var options: ConfigOption
    @Flag(name: .customLong("print-effective"), help: "Print the resolved configuration as JSON (defaults filled in, paths resolved against the config file's directory).")
    var printEffective = false
    /// The pointer is into the resolved configuration, e.g. /server/socket.
    @OptionGroup var field: FieldOption
    @Option(name: .customLong("expiry-warning-days"), help: "Warn about API keys that expire within this many days.")
    var expiryWarningDays: Int = APIKeyExpiry.defaultWarningDays

    func run() throws {
        let loaded = try options.load()
        let config = loaded.config
        let now = Int64(time(nil))
        for key in APIKeyExpiry.expiring(config.consumers, now: now, warningDays: max(0, expiryWarningDays)) {
            printError("warning: \(key.describe(now: now))")
        }
        if field.field != nil {
            try field.printValue(of: EffectiveConfig.document(of: config, source: loaded.bundle.configBytes),
                                 documentName: "the effective configuration")
        } else if printEffective {
            print(JSONCodec.serialize(EffectiveConfig.document(of: config, source: loaded.bundle.configBytes), pretty: true))
        } else {
            print("\(options.config): ok (\(config.routes.count) routes, \(config.upstreams.count) upstreams)")
        }
    }
}
