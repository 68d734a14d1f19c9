import PortcullisCore
import PortcullisRuntime

/// Everything `check` and `reload` validate before anything changes: the config file and
/// every plugin rule file it refers to.
enum GatewayValidation {
    static func validate(configPath: String) throws(ConfigErrors) -> GatewayConfig {
        try GatewayLoader.load(configPath: configPath).config
    }
}
