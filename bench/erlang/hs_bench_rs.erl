%% A gen_server of the release-upgrade benchmark (release_upgrade_N).  Compiled
%% six times by hs_bench_rel: as hs_rel_a, hs_rel_b and hs_rel_c ({d,'MOD',Name}),
%% each as vsn 1 and, with {d,'V2'}, vsn 2, whose code_change doubles the state.
-module(?MOD).
-behaviour(gen_server).
-ifdef(V2).
-vsn(2).
-else.
-vsn(1).
-endif.
-export([start_link/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, code_change/3]).

start_link(S) -> gen_server:start_link(?MODULE, S, []).

init(S) -> {ok, S}.

handle_call(get, _From, S) -> {reply, S, S};
handle_call(bump, _From, S) -> {reply, S + 1, S + 1}.
handle_cast(_Msg, S) -> {noreply, S}.
handle_info(_Msg, S) -> {noreply, S}.

-ifdef(V2).
code_change(_OldVsn, S, _Extra) -> {ok, S * 2}.
-else.
code_change(_OldVsn, S, _Extra) -> {ok, S}.
-endif.
