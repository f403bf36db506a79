//! Sendmail macros: which names are sent at each stage (the
//! `milter_*_macros` parameters, or the list a milter asked for in the
//! negotiation), and how their values are found (the session answers by
//! name through [`MacroSource`]; `milter_macro_defaults` fills the gaps).
//!
//! Owns the stage-to-list mapping and the lookup order; knows no macro's
//! meaning (that is the session's, which has the values).

use crate::config::{Config, canonical_macro};

use super::protocol::{
    SMFIC_BODYEOB, SMFIC_CONNECT, SMFIC_DATA, SMFIC_EOH, SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT, SMFIC_UNKNOWN,
    SMFIM_CONNECT, SMFIM_DATA, SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIM_EOH, SMFIM_EOM, SMFIM_HELO,
};

/// A protocol stage that carries macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    /// Headers and the end of the header section.
    EndOfHeaders,
    /// Body chunks and the end of the message.
    EndOfMessage,
    Unknown,
}

impl Stage {
    /// The negotiation's index for a milter's own list (`SMFIM_*`);
    /// unknown commands have none.
    fn smfim(self) -> Option<u32> {
        Some(match self {
            Stage::Connect => SMFIM_CONNECT,
            Stage::Helo => SMFIM_HELO,
            Stage::Mail => SMFIM_ENVFROM,
            Stage::Rcpt => SMFIM_ENVRCPT,
            Stage::Data => SMFIM_DATA,
            Stage::EndOfHeaders => SMFIM_EOH,
            Stage::EndOfMessage => SMFIM_EOM,
            Stage::Unknown => return None,
        })
    }

    /// The command code the macro packet names (the event it precedes).
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => SMFIC_CONNECT,
            Stage::Helo => SMFIC_HELO,
            Stage::Mail => SMFIC_MAIL,
            Stage::Rcpt => SMFIC_RCPT,
            Stage::Data => SMFIC_DATA,
            Stage::EndOfHeaders => SMFIC_EOH,
            Stage::EndOfMessage => SMFIC_BODYEOB,
            Stage::Unknown => SMFIC_UNKNOWN,
        }
    }
}

/// The session's answer to "what is macro X now?". Names come in the
/// `{name}` form (`{i}`, `{client_addr}`); None means "not set", and the
/// macro is then not sent unless `milter_macro_defaults` has it.
pub trait MacroSource: Sync {
    fn value(&self, name: &str) -> Option<String>;
}

/// The configured macro name lists and defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacroLists {
    pub connect: Vec<String>,
    pub helo: Vec<String>,
    pub mail: Vec<String>,
    pub rcpt: Vec<String>,
    pub data: Vec<String>,
    pub end_of_headers: Vec<String>,
    pub end_of_message: Vec<String>,
    pub unknown: Vec<String>,
    /// `milter_macro_defaults`, names in `{name}` form.
    pub defaults: Vec<(String, String)>,
}

impl MacroLists {
    /// The lists of a configuration (a listener's, with its `-o`).
    pub fn from_config(c: &Config) -> MacroLists {
        MacroLists {
            connect: c.tokens("milter_connect_macros"),
            helo: c.tokens("milter_helo_macros"),
            mail: c.tokens("milter_mail_macros"),
            rcpt: c.tokens("milter_rcpt_macros"),
            data: c.tokens("milter_data_macros"),
            end_of_headers: c.tokens("milter_end_of_header_macros"),
            end_of_message: c.tokens("milter_end_of_data_macros"),
            unknown: c.tokens("milter_unknown_command_macros"),
            defaults: c.milter_macro_defaults().to_vec(),
        }
    }

    fn configured(&self, stage: Stage) -> &[String] {
        match stage {
            Stage::Connect => &self.connect,
            Stage::Helo => &self.helo,
            Stage::Mail => &self.mail,
            Stage::Rcpt => &self.rcpt,
            Stage::Data => &self.data,
            Stage::EndOfHeaders => &self.end_of_headers,
            Stage::EndOfMessage => &self.end_of_message,
            Stage::Unknown => &self.unknown,
        }
    }

    /// The (name, value) pairs to send at `stage`: the milter's own list
    /// for the stage when it gave a non-empty one (it takes precedence, as
    /// in Postfix), else the configured one. Names are sent as written.
    pub fn values(&self, stage: Stage, own: &OwnLists, source: &dyn MacroSource) -> Vec<(String, String)> {
        let names: &[String] = match stage.smfim().and_then(|i| own.get(i)) {
            Some(list) => list,
            None => self.configured(stage),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let key = canonical_macro(name);
            let value = source
                .value(&key)
                .or_else(|| self.defaults.iter().find(|(n, _)| *n == key).map(|(_, v)| v.clone()));
            if let Some(v) = value {
                out.push((name.clone(), v));
            }
        }
        out
    }
}

/// The macro lists a milter asked for in the negotiation, by `SMFIM_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnLists([Option<Vec<String>>; 7]);

impl OwnLists {
    /// Records the list for stage `smfim`; false for an unknown stage.
    pub fn set(&mut self, smfim: u32, names: &str) -> bool {
        match self.0.get_mut(smfim as usize) {
            Some(slot) => {
                let list: Vec<String> =
                    names.split([' ', ',']).filter(|n| !n.is_empty()).map(str::to_owned).collect();
                *slot = Some(list);
                true
            }
            None => false,
        }
    }

    fn get(&self, smfim: u32) -> Option<&[String]> {
        self.0.get(smfim as usize).and_then(|l| l.as_deref()).filter(|l| !l.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Values;
    impl MacroSource for Values {
        fn value(&self, name: &str) -> Option<String> {
            match name {
                "{i}" => Some("4Hx".into()),
                "{mail_addr}" => Some("a@b".into()),
                _ => None,
            }
        }
    }

    #[test]
    fn configured_names_with_values_and_defaults() {
        let lists = MacroLists {
            mail: vec!["i".into(), "{auth_type}".into(), "{mail_addr}".into(), "{x}".into()],
            defaults: vec![("{x}".into(), "dflt".into()), ("{i}".into(), "never".into())],
            ..MacroLists::default()
        };
        let v = lists.values(Stage::Mail, &OwnLists::default(), &Values);
        assert_eq!(
            v,
            vec![
                ("i".into(), "4Hx".into()),
                ("{mail_addr}".into(), "a@b".into()),
                ("{x}".into(), "dflt".into())
            ]
        );
    }

    #[test]
    fn a_milters_own_list_wins() {
        let lists = MacroLists { mail: vec!["i".into()], ..MacroLists::default() };
        let mut own = OwnLists::default();
        assert!(own.set(SMFIM_ENVFROM, "{mail_addr} {client_addr}"));
        assert!(!own.set(9, "x"));
        assert_eq!(lists.values(Stage::Mail, &own, &Values), vec![("{mail_addr}".into(), "a@b".into())]);
        // An empty own list falls back to the configured one.
        own.set(SMFIM_ENVFROM, "");
        assert_eq!(lists.values(Stage::Mail, &own, &Values), vec![("i".into(), "4Hx".into())]);
    }
}
