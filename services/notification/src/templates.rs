//! The emails' words: one subject, text and HTML template per kind of email and per language,
//! rendered with minijinja (HTML auto-escaped). English is the only language so far; a user's
//! `locale` / `preferredLanguage` picks another once its directory exists under `templates/`.

use minijinja::Environment;
use serde::Serialize;

/// Which email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// For a user the customer's admin created.
    Welcome,
    /// A user's first assignment ever: for a provisioned user, their first contact.
    FirstAssignment,
    /// Every later assignment.
    Assignment,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Template::Welcome => "welcome",
            Template::FirstAssignment => "first_assignment",
            Template::Assignment => "assignment",
        }
    }

    pub fn parse(name: &str) -> Option<Template> {
        [Template::Welcome, Template::FirstAssignment, Template::Assignment].into_iter().find(|t| t.name() == name)
    }
}

/// What a template may say.
#[derive(Debug, Clone, Serialize)]
pub struct EmailContext {
    /// How to address the user (displayName, else full name, else userName).
    pub name: String,
    pub user_name: String,
    pub tenant_name: String,
    pub sign_in_url: String,
    /// The assigned content's title (empty for a welcome).
    pub title: String,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// (language, template file, source)
const SOURCES: &[(&str, &str, &str)] = &[
    ("en", "welcome.subject", include_str!("../templates/en/welcome.subject")),
    ("en", "welcome.txt", include_str!("../templates/en/welcome.txt")),
    ("en", "welcome.html", include_str!("../templates/en/welcome.html")),
    ("en", "first_assignment.subject", include_str!("../templates/en/first_assignment.subject")),
    ("en", "first_assignment.txt", include_str!("../templates/en/first_assignment.txt")),
    ("en", "first_assignment.html", include_str!("../templates/en/first_assignment.html")),
    ("en", "assignment.subject", include_str!("../templates/en/assignment.subject")),
    ("en", "assignment.txt", include_str!("../templates/en/assignment.txt")),
    ("en", "assignment.html", include_str!("../templates/en/assignment.html")),
];

const DEFAULT_LANGUAGE: &str = "en";

/// Failures rendering (a template bug: never the recipient's fault).
#[derive(Debug, thiserror::Error)]
#[error("rendering {template}: {source}")]
pub struct RenderError {
    template: String,
    source: minijinja::Error,
}

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every template; a syntax error is found here, at start.
    pub fn new() -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
        });
        env.set_keep_trailing_newline(true);
        for (lang, file, source) in SOURCES {
            let name = format!("{lang}/{file}");
            env.add_template_owned(name.clone(), *source).map_err(|source| RenderError { template: name, source })?;
        }
        Ok(Templates { env })
    }

    /// The language to use for a locale such as `en-US`, `fr_CA` or `de`.
    pub fn language(&self, locale: &str) -> &'static str {
        let primary = locale.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        SOURCES.iter().map(|(lang, _, _)| *lang).find(|lang| *lang == primary).unwrap_or(DEFAULT_LANGUAGE)
    }

    /// Renders one email in the locale's language.
    pub fn render(&self, template: Template, locale: &str, ctx: &EmailContext) -> Result<Rendered, RenderError> {
        let lang = self.language(locale);
        let one = |ext: &str| -> Result<String, RenderError> {
            let name = format!("{lang}/{}.{ext}", template.name());
            let t = self.env.get_template(&name).map_err(|source| RenderError { template: name.clone(), source })?;
            t.render(ctx).map_err(|source| RenderError { template: name, source })
        };
        Ok(Rendered { subject: one("subject")?.trim().to_owned(), text: one("txt")?, html: one("html")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(title: &str) -> EmailContext {
        EmailContext {
            name: "Jane Doe".into(),
            user_name: "jane.doe@acme.com".into(),
            tenant_name: "Acme Corp".into(),
            sign_in_url: "https://acme.learning.example.com".into(),
            title: title.into(),
        }
    }

    fn snapshot(template: Template, title: &str) -> String {
        let r = Templates::new().unwrap().render(template, "en-US", &ctx(title)).unwrap();
        format!("Subject: {}\n\n--- text ---\n{}\n--- html ---\n{}", r.subject, r.text, r.html)
    }

    #[test]
    fn welcome_email() {
        insta::assert_snapshot!(snapshot(Template::Welcome, ""));
    }

    #[test]
    fn first_assignment_email() {
        insta::assert_snapshot!(snapshot(Template::FirstAssignment, "Fire safety <basics> & drills"));
    }

    #[test]
    fn assignment_email() {
        insta::assert_snapshot!(snapshot(Template::Assignment, "Data protection 101"));
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let r = Templates::new().unwrap().render(Template::Assignment, "en", &ctx("<b>&</b>")).unwrap();
        assert!(r.html.contains("&lt;b&gt;&amp;&lt;&#x2f;b&gt;"), "{}", r.html);
        assert!(r.text.contains("<b>&</b>"));
    }

    #[test]
    fn locales_fall_back_to_english() {
        let t = Templates::new().unwrap();
        assert_eq!(t.language("en_GB"), "en");
        assert_eq!(t.language("fr-CA"), "en");
        assert_eq!(t.language(""), "en");
    }
}
