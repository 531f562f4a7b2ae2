%% Small module used for module_load and purge_100k_idle (loaded from a
%% binary only; never put on the code path).
-module(hs_bench_mod).
-export([a/1, b/2, c/1, d/0, e/1]).

a(X) -> X + 1.
b(X, Y) -> {X, Y, a(X)}.
c(L) when is_list(L) -> [a(X) || X <- L];
c(_) -> error.
d() -> #{one => 1, two => 2, three => 3}.
e(N) -> lists:sum(c(lists:seq(1, N))).
