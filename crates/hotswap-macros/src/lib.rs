//! The `module!` macro of the hotswap SDK. Use it through `hotswap::module!`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{bracketed, Ident, LitStr, Token};

struct ExportSpec {
    func: syn::Path,
    name: String,
}

struct ModuleSpec {
    name: LitStr,
    version: LitStr,
    exports: Vec<ExportSpec>,
    functions: Vec<ExportSpec>,
    gen_server: Option<syn::Type>,
}

fn parse_list(input: ParseStream<'_>) -> syn::Result<Vec<ExportSpec>> {
    let content;
    bracketed!(content in input);
    let mut v = Vec::new();
    while !content.is_empty() {
        let func: syn::Path = content.parse()?;
        let name = if content.peek(Token![as]) {
            content.parse::<Token![as]>()?;
            content.parse::<LitStr>()?.value()
        } else {
            match func.segments.last() {
                Some(s) => s.ident.to_string(),
                None => return Err(content.error("expected a function path")),
            }
        };
        v.push(ExportSpec { func, name });
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    Ok(v)
}

impl Parse for ModuleSpec {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let (mut name, mut version, mut exports, mut functions) = (None, None, None, None);
        let (mut gen_server, mut supervisor) = (None, None);
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            match key.to_string().as_str() {
                "name" => name = Some(input.parse::<LitStr>()?),
                "version" => version = Some(input.parse::<LitStr>()?),
                "exports" => exports = Some(parse_list(input)?),
                "functions" => functions = Some(parse_list(input)?),
                "gen_server" => gen_server = Some(input.parse::<syn::Type>()?),
                "supervisor" => supervisor = Some(input.parse::<syn::Type>()?),
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown key `{other}`: expected `name`, `version`, `exports`, `functions`, `gen_server` or `supervisor`"),
                    ))
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        let missing = |k: &str| input.error(format!("hotswap::module! needs `{k}: ...`"));
        let version = match version {
            Some(v) => v,
            // Omitted: the crate's own version, so that `cargo` manifests carry it.
            None => match std::env::var("CARGO_PKG_VERSION") {
                Ok(v) if !v.is_empty() => LitStr::new(&v, proc_macro2::Span::call_site()),
                _ => return Err(input.error(
                    "hotswap::module! without `version: ...` takes the crate's version (CARGO_PKG_VERSION), \
                     which is not set here: give `version: \"...\"` or build with cargo",
                )),
            },
        };
        Ok(ModuleSpec {
            name: name.ok_or_else(|| missing("name"))?,
            version,
            exports: match (exports, gen_server.is_some() || supervisor.is_some()) {
                (Some(e), _) => e,
                (None, true) => Vec::new(),
                (None, false) => return Err(missing("exports")),
            },
            functions: {
                let mut f = functions.unwrap_or_default();
                if let Some(t) = &supervisor {
                    f.push(ExportSpec {
                        func: syn::parse_quote!(::hotswap::supervisor::__init::<#t>),
                        name: "supervisor_init".into(),
                    });
                }
                f
            },
            gen_server,
        })
    }
}

impl ModuleSpec {
    /// What the loader would refuse anyway, refused at compile time with a span.
    fn check(&self) -> syn::Result<()> {
        if self.name.value().is_empty() {
            return Err(syn::Error::new(
                self.name.span(),
                "the module name must not be empty",
            ));
        }
        if self.version.value().is_empty() {
            return Err(syn::Error::new(
                self.version.span(),
                "the version must not be empty",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for e in self.exports.iter().chain(&self.functions) {
            if !seen.insert(e.name.clone()) {
                return Err(syn::Error::new_spanned(
                    &e.func,
                    format!("export `{}` is listed twice", e.name),
                ));
            }
        }
        Ok(())
    }
}

/// Declare a hotswap module: its name, its version and its exported functions.
///
/// `version` may be omitted: the module's version is then the crate's
/// (`CARGO_PKG_VERSION`, the `version` of its `Cargo.toml`), which is what
/// `hotswap release` expects.
///
/// ```ignore
/// hotswap::module! {
///     name: "counter",
///     version: "1.0.0",
///     exports: [count, run_loop as "loop"],
/// }
/// ```
///
/// Each export is an `async fn(Ctx, A) -> R` where `A: DeserializeOwned` is the argument
/// and `R: IntoOutcome`: it can be spawned as a process, continued into, or awaited with
/// `Ctx::apply`. An optional `functions: [..]` list names synchronous
/// `fn(Ctx, A) -> R` (`R: Serialize`) functions, called fully-qualified with
/// `Ctx::function`. `gen_server: T` declares the module's `GenServer`, and
/// `supervisor: T` its `hotswap::supervisor::Supervisor` (exported as the function
/// `supervisor_init`); either makes `exports` optional. The macro generates the module descriptor (ABI version, name,
/// version, a unique build id, the panic strategy the crate was built with), one
/// panic-catching `extern "C"` shim per export, and the library's `#[global_allocator]`
/// (`hotswap::private::ModuleHeap`: the version's own heap in the node, freed by a purge;
/// a crate that declares another global allocator does not compile).
#[proc_macro]
pub fn module(input: TokenStream) -> TokenStream {
    let spec = syn::parse_macro_input!(input as ModuleSpec);
    if let Err(e) = spec.check() {
        return e.to_compile_error().into();
    }
    let name = &spec.name;
    let version = &spec.version;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Fixed width, so that two builds of the same code differ only in these bytes (tools
    // compare builds with the id masked: `hotswap release`, `hotswap dev`).
    let build_id = format!(
        "{}-{}-{:032x}-{:08x}",
        name.value(),
        version.value(),
        nanos,
        std::process::id()
    );
    let n = spec.exports.len();
    // One pass per list: each item's `extern "C"` shim and its descriptor entry.
    let (shims, entries): (Vec<_>, Vec<_>) = spec
        .exports
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let shim = format_ident!("__hotswap_start_{}", i);
            let func = &e.func;
            let lit = syn::LitByteStr::new(e.name.as_bytes(), proc_macro2::Span::call_site());
            let def = quote! {
                unsafe extern "C" fn #shim(
                    proc: *mut ::hotswap::abi::ProcHandle,
                    arg: *const u8,
                    len: usize,
                ) -> *mut ::hotswap::abi::FutureObj {
                    // SAFETY: the node calls export shims with the caller's process handle
                    // and a valid argument byte range.
                    unsafe { ::hotswap::private::start(proc, arg, len, #func) }
                }
            };
            let entry = quote! {
                ::hotswap::abi::Export { name: ::hotswap::abi::Bytes::new(#lit), start: #shim }
            };
            (def, entry)
        })
        .unzip();
    let nf = spec.functions.len();
    let (call_shims, fn_entries): (Vec<_>, Vec<_>) = spec
        .functions
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let shim = format_ident!("__hotswap_call_{}", i);
            let func = &e.func;
            let lit = syn::LitByteStr::new(e.name.as_bytes(), proc_macro2::Span::call_site());
            let def = quote! {
                unsafe extern "C" fn #shim(
                    proc: *mut ::hotswap::abi::ProcHandle,
                    arg: *const u8,
                    len: usize,
                    out: *mut ::core::ffi::c_void,
                    write: ::hotswap::abi::WriteFn,
                ) -> u32 {
                    // SAFETY: the node calls function shims with the caller's process
                    // handle, a valid argument byte range and its copy callback.
                    unsafe { ::hotswap::private::call(proc, arg, len, out, write, #func) }
                }
            };
            let entry = quote! {
                ::hotswap::abi::Function { name: ::hotswap::abi::Bytes::new(#lit), call: #shim }
            };
            (def, entry)
        })
        .unzip();
    // The description of the module's types (`ModuleDescriptor::describe`).
    let describe_server = match &spec.gen_server {
        Some(t) => quote! {
            s.server = Some(::hotswap::private::describe_server::<#t>(
                (&::hotswap::private::Probe::<<#t as ::hotswap::gen_server::GenServer>::Reply>::new())
                    .__hotswap_describe(),
            ));
        },
        None => quote! {},
    };
    let describe_exports = spec.exports.iter().map(|e| {
        let func = &e.func;
        let n = &e.name;
        quote! {
            s.exports.push(::hotswap::schema::FnSchema {
                name: #n.into(),
                arg: ::hotswap::private::describe_arg(&#func),
                result: (&::hotswap::private::probe_output(&#func)).__hotswap_describe(),
            });
        }
    });
    let describe_functions = spec.functions.iter().map(|e| {
        let func = &e.func;
        let n = &e.name;
        quote! {
            s.exports.push(::hotswap::schema::FnSchema {
                name: #n.into(),
                arg: ::hotswap::private::describe_arg(&#func),
                result: (&::hotswap::private::probe_return(&#func)).__hotswap_describe(),
            });
        }
    });
    let describe_def = quote! {
        unsafe extern "C" fn __hotswap_describe(
            out: *mut ::core::ffi::c_void,
            write: ::hotswap::abi::WriteFn,
        ) -> u32 {
            #[allow(unused_imports)]
            use ::hotswap::private::{DescribeDe as _, DescribeOther as _};
            // SAFETY: the node passes its buffer and copy callback.
            unsafe {
                ::hotswap::private::describe(out, write, || {
                    let mut s = ::hotswap::schema::ModuleSchema {
                        module: #name.into(),
                        version: #version.into(),
                        server: None,
                        exports: ::std::vec::Vec::new(),
                    };
                    #describe_server
                    #(#describe_exports)*
                    #(#describe_functions)*
                    s
                })
            }
        }
    };
    let (server_def, server_ptr) = match &spec.gen_server {
        Some(t) => (
            quote! {
                static SERVER: ::hotswap::abi::ServerVTable = ::hotswap::private::server_vtable::<#t>();
            },
            quote! { &SERVER as *const ::hotswap::abi::ServerVTable },
        ),
        None => (quote! {}, quote! { ::core::ptr::null() }),
    };
    let name_b = syn::LitByteStr::new(name.value().as_bytes(), name.span());
    let vsn_b = syn::LitByteStr::new(version.value().as_bytes(), version.span());
    let build_b = syn::LitByteStr::new(build_id.as_bytes(), proc_macro2::Span::call_site());
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        mod __hotswap_module {
            use super::*;
            #(#shims)*
            #(#call_shims)*
            static EXPORTS: [::hotswap::abi::Export; #n] = [#(#entries),*];
            static FUNCTIONS: [::hotswap::abi::Function; #nf] = [#(#fn_entries),*];
            #server_def
            #describe_def

            /// Every allocation of this library goes to the heap the node keeps for this
            /// loaded version, freed as a whole when the version is purged.
            #[global_allocator]
            static HOTSWAP_HEAP: ::hotswap::private::ModuleHeap = ::hotswap::private::ModuleHeap;

            /// The module descriptor read by the node before any module code runs.
            #[no_mangle]
            pub static HOTSWAP_MODULE_DESCRIPTOR: ::hotswap::abi::ModuleDescriptor = ::hotswap::abi::ModuleDescriptor {
                magic: ::hotswap::abi::MAGIC,
                abi_version: ::hotswap::abi::ABI_VERSION,
                size: ::core::mem::size_of::<::hotswap::abi::ModuleDescriptor>() as u32,
                name: ::hotswap::abi::Bytes::new(#name_b),
                version: ::hotswap::abi::Bytes::new(#vsn_b),
                build_id: ::hotswap::abi::Bytes::new(#build_b),
                sdk_version: ::hotswap::abi::Bytes::new(::hotswap::private::SDK_VERSION.as_bytes()),
                codec: ::hotswap::abi::Bytes::new(::hotswap::private::CODEC_ID.as_bytes()),
                panic_unwind: cfg!(panic = "unwind") as u8,
                exports: EXPORTS.as_ptr(),
                exports_len: #n,
                functions: FUNCTIONS.as_ptr(),
                functions_len: #nf,
                init: ::hotswap::private::init,
                poll: ::hotswap::private::poll,
                drop_future: ::hotswap::private::drop_future,
                server: #server_ptr,
                describe: ::core::option::Option::Some(__hotswap_describe),
            };
        }
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::ModuleSpec;

    fn parse(src: &str) -> syn::Result<ModuleSpec> {
        let spec: ModuleSpec = syn::parse_str(src)?;
        spec.check().map(|()| spec)
    }

    fn error(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("accepted: {src}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_exports_functions_and_renames() {
        let s =
            parse(r#"name: "m", version: "1.0", exports: [a, b::c as "loop"], functions: [f],"#)
                .unwrap();
        let names: Vec<_> = s.exports.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "loop"]);
        assert_eq!(s.functions[0].name, "f");
        assert!(
            parse(r#"exports: [], version: "2", name: "m""#).is_ok(),
            "any order, no trailing comma"
        );
    }

    #[test]
    fn missing_keys_are_named() {
        assert!(error(r#"version: "1", exports: [a]"#).contains("needs `name: ...`"));
        // Without `version`, the crate's own version (cargo sets it for this test too).
        let s = parse(r#"name: "m", exports: [a]"#).unwrap();
        assert_eq!(s.version.value(), env!("CARGO_PKG_VERSION"));
        assert!(error(r#"name: "m", version: "1""#).contains("needs `exports: ...`"));
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(
            error(r#"name: "m", version: "1", exports: [a], export: [b]"#)
                .contains("unknown key `export`")
        );
        assert!(error(r#"name: "", version: "1", exports: [a]"#)
            .contains("module name must not be empty"));
        assert!(
            error(r#"name: "m", version: "", exports: [a]"#).contains("version must not be empty")
        );
        assert!(
            error(r#"name: "m", version: "1", exports: [a, a]"#).contains("`a` is listed twice")
        );
        assert!(
            error(r#"name: "m", version: "1", exports: [a as "f"], functions: [f]"#)
                .contains("`f` is listed twice")
        );
        assert!(error(r#"name: m, version: "1", exports: [a]"#).contains("expected string literal"));
    }

    #[test]
    fn gen_server_key_makes_exports_optional() {
        let s = parse(r#"name: "m", version: "1", gen_server: State"#).unwrap();
        assert!(s.gen_server.is_some() && s.exports.is_empty());
        assert!(error(r#"name: "m", version: "1""#).contains("needs `exports: ...`"));
        assert!(error(r#"name: "m", version: "1", gen_sever: S"#).contains("gen_server"));
    }

    #[test]
    fn supervisor_key_exports_its_init_function() {
        let s = parse(r#"name: "m", version: "1", supervisor: Tree"#).unwrap();
        assert!(s.exports.is_empty());
        assert_eq!(s.functions.len(), 1);
        assert_eq!(s.functions[0].name, "supervisor_init");
        let e = error(r#"name: "m", version: "1", functions: [supervisor_init], supervisor: T"#);
        assert!(e.contains("listed twice"), "{e}");
    }
}
