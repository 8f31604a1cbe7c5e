//! Chat templates, rendered the way Hugging Face transformers renders them.
//!
//! transformers compiles `tokenizer.chat_template` with Jinja2 using `trim_blocks` and
//! `lstrip_blocks`, the loop-control extension, and the globals `raise_exception` and
//! `strftime_now`; the context holds `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token` and any extra keyword arguments. We do the same with minijinja, plus the
//! Python string/dict methods (`.strip()`, `.startswith()`, `.items()`) templates call.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    #[error("chat template failed while rendering: {0}")]
    Render(String),
}

/// One turn of a conversation, as transformers' `messages` list holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Syntax(one_line(&e.to_string())))?;
        crate::namespace_check::check(source).map_err(TemplateError::Syntax)?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Syntax(one_line(&e.to_string())))?;
        let text: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let mut out = CappedOutput {
            text: Vec::new(),
            limit: OUTPUT_SLACK + 8 * text,
            overflowed: false,
        };
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            &mut out,
        );
        if out.overflowed {
            return Err(TemplateError::Render(format!(
                "the output passed {} bytes (1 MiB plus 8 times the messages): a chat template frames messages, it does not multiply them",
                out.limit
            )));
        }
        rendered.map_err(|e| TemplateError::Render(one_line(&e.to_string())))?;
        String::from_utf8(out.text).map_err(|e| TemplateError::Render(e.to_string()))
    }
}

/// Instructions one render may execute: real templates take thousands for a long
/// conversation; nested loops over `range(99999)` would take hours.
const RENDER_FUEL: u64 = 5_000_000;

/// Output a render may write beyond 8 bytes per byte of its messages.
const OUTPUT_SLACK: usize = 1 << 20;

/// Collects a render's output and fails the write that would pass `limit`.
struct CappedOutput {
    text: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A message on one line: text from a file (a template's own `raise_exception` message, a
/// role or a column name in a dataset) may hold line breaks, and errors print one per line.
pub(crate) fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's ChatML template, as stored in its tokenizer config.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_matches_transformers_output() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_like_jinja2() {
        // Output checked against Python jinja2 with trim_blocks + lstrip_blocks.
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n{{ m.content.strip() }}|\n  {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::new("user", "  a "),
                    ChatMessage::new("user", "b"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(out, "a|\nb|\n");
    }

    #[test]
    fn raise_exception_surfaces_the_templates_message() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let e = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .unwrap_err();
        assert!(
            e.to_string().contains("Conversation must start with user"),
            "{e}"
        );
    }

    // Found by whetstone-fuzz: a template's own message spanned lines; nested loops ran for
    // hours; `indent` and string repetition multiplied the output without bound.
    #[test]
    fn errors_are_one_line_and_renders_are_bounded() {
        let t = ChatTemplate::new("{{ raise_exception('two\nlines') }}", "", "").unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("two\\nlines") && !e.contains('\n'), "{e}");
        let start = std::time::Instant::now();
        let t = ChatTemplate::new(
            "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(t.render(&[], false).is_err());
        assert!(start.elapsed().as_secs() < 60);
        let t = ChatTemplate::new(
            "{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let e = t
            .render(&[ChatMessage::new("user", "hi")], false)
            .unwrap_err();
        assert!(
            e.to_string().contains("the output passed 1048624 bytes"),
            "{e}"
        );
    }

    // Found by whetstone-fuzz: printing a namespace stored in itself overflowed the stack
    // inside minijinja, which aborts the process; such templates are refused when compiled.
    #[test]
    fn a_namespace_that_can_contain_itself_is_refused_before_rendering() {
        let e = ChatTemplate::new(
            "{% set ns = namespace(n=0) %}{% set ns.n = ns %}{{ ns.n }}",
            "",
            "",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("line 1") && e.contains("namespace"), "{e}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(TemplateError::Syntax(_))
        ));
    }
}
