//! The config file parser: any bytes give Ok or a ConfigError naming a key, never a panic; an
//! accepted config prints as TOML that parses back to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = Config::default();
    match config.apply_toml(text) {
        Ok(()) => {
            let _ = config.validate();
            // Tokens are masked when printed, so compare without them.
            config.tokens = Default::default();
            let printed = config.to_toml();
            let mut again = Config::default();
            again
                .apply_toml(&printed)
                .unwrap_or_else(|e| panic!("printed config does not parse back: {e}\n{printed}"));
            assert_eq!(again.to_toml(), printed);
        }
        Err(err) => assert!(!err.key.is_empty(), "an error must name its key"),
    }
});
